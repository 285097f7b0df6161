"""A chat template written for Ollama: the Go template its Modelfile's ``TEMPLATE`` holds.

Ollama does not read Jinja. A tuned adapter answers well only when it is prompted exactly as it
was trained, so the Go template is not written by hand per model family: it is derived from
what the tokenizer's own chat template renders. Each role's message is rendered with a marker
for its content, which gives the text around it; the text a conversation starts with when its
first message is not a system one; and the generation prompt. That shape is then checked
against the chat template on several conversations (English, Japanese, several turns, with and
without a system message), and the export is refused when any differs: a template that changes
messages by their content or position cannot be written this way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from jinja2 import TemplateError

from knowledge.errors import ConfigError

ROLES = ("system", "user", "assistant")
_MARK = "TSUMUGI-CONTENT-7f3a"
PROBES = [
    [("user", "What is the warranty on the X4 tent?")],
    [("system", "You answer for Contoso."), ("user", "Hello\nthere")],
    [("user", "テントは何人用ですか？"), ("assistant", "4人用です。"), ("user", "重さは？")],
    [("system", "Be brief."), ("user", " One"), ("assistant", "Two\n\nThree \n"), ("user", "Four")],
]
"""Conversations on which the Go template must give the chat template's text exactly (spaces at
a message's edges included: a template that trims them cannot be written for Ollama)."""


@dataclass(frozen=True)
class ChatShape:
    """A chat template as text around each message."""

    around: dict[str, tuple[str, str]]
    """Per role, the text before and after a message's content."""
    opening: str
    """Text before a first message that is not a system message (a default system prompt)."""
    generation: str
    """Text after the conversation that asks the model for its reply."""

    def render(self, messages: list[dict]) -> str:
        parts = [self.opening] if messages and messages[0]["role"] != "system" else []
        for m in messages:
            before, after = self.around[m["role"]]
            parts += [before, m["content"], after]
        return "".join(parts + [self.generation])

    def go_template(self) -> str:
        """The same text as a Go template over Ollama's ``.Messages``. No trim markers: every
        character outside the actions is literal, newlines included."""
        out = ["{{ range $i, $m := .Messages }}"]
        if self.opening:
            out.append('{{ if and (eq $i 0) (ne $m.Role "system") }}' + self.opening + "{{ end }}")
        for n, role in enumerate(ROLES):
            before, after = self.around[role]
            out.append(("{{ if" if n == 0 else "{{ else if") + f' eq $m.Role "{role}" }}}}')
            out.append(before + "{{ $m.Content }}" + after)
        out.append("{{ end }}{{ end }}" + self.generation)
        return "".join(out)


def chat_shape(tokenizer, model: str) -> ChatShape:
    """The shape of ``tokenizer``'s chat template, checked on :data:`PROBES`; ConfigError when
    it cannot be written as an Ollama template."""

    def render(pairs: list[tuple[str, str]], generation: bool = False) -> str:
        messages = [{"role": r, "content": c} for r, c in pairs]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)

    refused = ConfigError(
        f"The chat template of {model} cannot be written as an Ollama TEMPLATE (it changes messages "
        "by their content or position); serve this adapter with vLLM instead (--for vllm)."
    )
    try:
        system = render([("system", _MARK)])
        with_user = render([("system", _MARK), ("user", _MARK)])
        with_reply = render([("system", _MARK), ("user", _MARK), ("assistant", _MARK)])
        blocks = {
            "system": system,
            "user": _after(with_user, system),
            "assistant": _after(with_reply, with_user),
        }
        around = {}
        for role, block in blocks.items():
            before, found, after = block.partition(_MARK)
            if not found or _MARK in after:
                raise ValueError(role)
            around[role] = (before, after)
        user_alone = render([("user", _MARK)])
        if not user_alone.endswith(blocks["user"]):
            raise ValueError("opening")
        shape = ChatShape(
            around, user_alone[: -len(blocks["user"])], _after(render([("user", _MARK)], True), user_alone)
        )
        for probe in PROBES:
            if shape.render([{"role": r, "content": c} for r, c in probe]) != render(probe, True):
                raise ValueError("probe")
    except (ValueError, TypeError, TemplateError) as exc:  # also a template that raises on some conversation
        raise refused from exc
    pieces = [shape.opening, shape.generation] + [t for pair in around.values() for t in pair]
    if any(not _writable(p) for p in pieces):
        raise refused
    return shape


def _writable(literal: str) -> bool:
    """Whether ``literal`` survives as text in a Modelfile's TEMPLATE: no template delimiters
    (a trailing ``{`` would make one with the next action), no closing triple quote, and
    nothing Ollama's parser drops (characters that are not printable, save tab and newline)."""
    return (
        "{{" not in literal
        and not literal.endswith("{")
        and '"""' not in literal
        and all(c.isprintable() or c in "\t\n" for c in literal)
    )


OLLAMA_ADAPTER_MODELS = ("llama", "mistral", "gemma", "gemma2")
"""Model types whose safetensors LoRA adapters Ollama applies (its Modelfile documentation)."""


def check_ollama_base(folder: str, model: str) -> None:
    """ConfigError unless Ollama can apply a LoRA adapter to the base model in ``folder``."""
    try:
        kind = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")).get("model_type", "")
    except (OSError, ValueError):
        kind = ""
    if kind not in OLLAMA_ADAPTER_MODELS:
        raise ConfigError(
            f"Ollama applies adapters to {', '.join(OLLAMA_ADAPTER_MODELS)} models, and {model} is "
            f"{kind or 'of an unknown type'}; serve this adapter with vLLM instead (--for vllm)."
        )


def _after(text: str, prefix: str) -> str:
    if not text.startswith(prefix):
        raise ValueError("not a prefix")
    return text[len(prefix) :]


def modelfile(base: str, shape: ChatShape, stops: list[str]) -> str:
    """An Ollama Modelfile: the base model's folder, the adapter beside it, the template and the
    stop strings; temperature 0, Tsumugi's own default for answers."""
    lines = [
        "# Written by Tsumugi: ollama create NAME -f Modelfile (see SERVE.md)",
        f"FROM {base}",
        "ADAPTER ./adapter",
        f'TEMPLATE """{shape.go_template()}"""',
    ]
    for stop in stops:
        if '"' in stop or not stop.isprintable():
            raise ConfigError(
                f"The end-of-reply marker {stop!r} cannot be written in an Ollama Modelfile; "
                "serve this adapter with vLLM instead (--for vllm)."
            )
        lines.append(f'PARAMETER stop "{stop}"')
    lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"
