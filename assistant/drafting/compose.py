"""Customer-support reply drafts: a customer's message in, a grounded reply in their language out.

The model writes the body from the retrieved passages, with [n] citations for the agent. The
greeting, the closing and the signature come from fixed texts per language and tone (or the
user's template), so a Japanese reply opens and closes in correct business keigo even when a
small model's own Japanese is weak. Everything else (retrieval, decomposition, confidence,
escalation) is the answering pipeline of :mod:`assistant.answering.answer`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Generator
from dataclasses import dataclass

from assistant.answering.answer import Answer, AnswerConfig, answer_question
from assistant.answering.decompose import about, asked
from assistant.answering.prompt import build_messages
from assistant.answering.styles import DEFAULT_STYLE, STYLES
from knowledge.errors import ConfigError
from knowledge.lexical import is_japanese, japanese_name
from knowledge.query import Query
from knowledge.retrieve import Hit, RetrievalConfig
from knowledge.text import sentences

TONES = ("formal", "friendly", "concise")

GREETING = {
    "formal": {
        "en": "Dear customer,\n\nThank you for contacting us.",
        "ja": "お問い合わせいただき、誠にありがとうございます。",
    },
    "friendly": {
        "en": "Hi there,\n\nThanks for getting in touch!",
        "ja": "お問い合わせいただき、ありがとうございます。",
    },
    "concise": {"en": "Hello,", "ja": "お問い合わせありがとうございます。"},
}

CLOSING = {
    "formal": {
        "en": "Please do not hesitate to contact us if there is anything else we can help with.\n\nKind regards,",
        "ja": "ご不明な点がございましたら、お気軽にお問い合わせくださいませ。\n何卒よろしくお願い申し上げます。",
    },
    "friendly": {
        "en": "Let us know if anything else comes up!\n\nBest wishes,",
        "ja": "ほかにもご不明な点があれば、いつでもお気軽にご連絡ください。\nよろしくお願いいたします。",
    },
    "concise": {"en": "Regards,", "ja": "よろしくお願いいたします。"},
}

NAMED_GREETING = {
    "formal": "Dear {full},\n\nThank you for contacting us.",
    "friendly": "Hi {first},\n\nThanks for getting in touch!",
    "concise": "Hello {first},",
}
"""English greetings for a customer who signed their message. A Japanese reply puts the
name, with 様, on a line above the fixed opening: the customer's own spelling of their full
name needs no family/given split."""

HOLDING = {
    "en": "We are checking your question with our team and will get back to you as soon as possible.",
    "ja": "ご質問の件につきましては、担当部署に確認のうえ、改めてご連絡いたします。",
}

_GREETING_LINE = re.compile(
    r"^\s*(?:(?:hi|hello|hey|dear|good (?:morning|afternoon|evening))\b[^\n]{0,40}|[A-Z][a-z]+),?\s*$", re.I
)
_SIGN_OFF = re.compile(
    r"^\s*(?:(?:best|kind|warm)?\s*regards|sincerely|best wishes|best|thanks|thank you|cheers)\b[^\n]{0,40}$",
    re.I,
)
_PLEASANTRY = re.compile(
    r"^(?:I hope (?:you(?:'re| are)|this finds)[^.!]*[.!]|I(?:'m| am) (?:so )?(?:glad|happy) [^.!]*[.!]|"
    r"Thank you for (?:reaching out|contacting|your (?:message|question|email))[^.!]*[.!]|"
    r"The answer to your question is:?)\s*",
    re.I,
)

_NAME = re.compile(
    r"^(?!(?:The|Sent|From)\b)[A-Z][^\W\d_]*(?:['’.-][^\W\d_]+)*\.?(?: [A-Z][^\W\d_]*(?:['’.-][^\W\d_]+)*){0,3}$"
)
_NOT_A_PERSON = re.compile(
    r"\b(?:team|support|service|department|desk|inc|corp|ltd|llc|company|order)\b", re.I
)
_HONORIFIC = re.compile(r"^(?:mr|mrs|ms|miss|dr|prof)\.?$", re.I)

NO_MESSAGE = "Paste the customer's message first."


def customer_name(message: str) -> str:
    """The name a customer signed with: the line after their sign-off ("Thanks,\nMaria Lopez")
    or the rest of it ("Best, Maria"); in Japanese, a last line the dictionary reads as a
    person's name (山田太郎); empty when there is none."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if lines and is_japanese(message):
        return lines[-1] if japanese_name(lines[-1]) else ""
    for i in range(len(lines) - 1, -1, -1):
        if _SIGN_OFF.match(lines[i]):
            after = lines[i].split(",", 1)[1].strip(" -–—") if "," in lines[i] else ""
            name = after or (lines[i + 1].lstrip("-–— ") if i + 1 < len(lines) else "")
            if not name or _HONORIFIC.match(name.split()[-1]):  # "Mr." alone is no name
                return ""
            name = name.rstrip(".!")
            return name if _NAME.match(name) and not _NOT_A_PERSON.search(name) else ""
    return ""


def clean_body(body: str) -> str:
    """The model's text without its own greeting, sign-off or pleasantries (compose adds the real ones)."""
    lines = body.strip().splitlines()
    while lines and (not lines[0].strip() or _GREETING_LINE.match(lines[0])):
        lines.pop(0)
    while lines and (
        not lines[-1].strip()
        or _SIGN_OFF.match(lines[-1])
        or len(lines[-1].split()) <= 2
        and not re.search(r"[.!?。]", lines[-1])
    ):
        lines.pop()
    text = "\n".join(lines).strip()
    previous = None
    while previous != text:
        previous = text
        text = _PLEASANTRY.sub("", text).lstrip()
    return text


@dataclass(frozen=True)
class DraftConfig:
    tone: str = "formal"
    """formal, friendly or concise: the greeting and closing; concise also keeps the body to
    its first two sentences."""
    signature: str = ""
    """Added under the closing (name, team, contact)."""
    template: str = ""
    """A reply template with {reply} where the drafted body goes (and optionally {signature});
    empty: the greeting and closing for the tone and language."""
    top_k: int = 5
    max_new_tokens: int = 320
    decompose: bool = True
    escalate: bool = True
    """Whether a low-confidence draft may go to the larger model (when one is configured)."""
    confidence_threshold: float | None = None
    style: str = DEFAULT_STYLE
    """How the body is written: quote, concise or detailed (see assistant.answering.styles)."""
    rerank_model: str | None = None
    """The cross-encoder that reorders retrieved passages (see knowledge.rerank); None: none."""

    def __post_init__(self) -> None:
        problems = []
        if self.tone not in TONES:
            problems.append(f"The tone should be one of {', '.join(TONES)}, got {self.tone!r}.")
        if self.style not in STYLES:
            problems.append(f"The answer style should be one of {', '.join(STYLES)}, got {self.style!r}.")
        if self.template.strip() and "{reply}" not in self.template:
            problems.append("The reply template needs a {reply} placeholder where the drafted answer goes.")
        if problems:
            raise ConfigError(" ".join(problems))


def draft_messages(tone: str):
    """The answering prompt, on the questions the message asks.

    Tried on the contoso manuals, the embedded model answered the bare questions with facts
    and citations, while a whole email, a drafting brief or a tone instruction sent it into
    pleasantries ("I'm glad you're planning a trip… The answer is:"). So the tone and the
    greeting live in :func:`compose`; the larger model, when escalated to, gets these same
    messages.
    """

    def build(message: str, hits: list[Hit], history, lang: str) -> list[dict]:
        return build_messages(asked(message), hits, [], lang)

    return build


def compose(body: str, lang: str, config: DraftConfig, name: str = "") -> str:
    """The whole reply around the drafted body; ``name``: the customer's, for the greeting."""
    body = clean_body(body)
    if config.tone == "concise":
        body = ("" if lang == "ja" else " ").join(sentences(body)[:2])
    if config.template.strip():
        filled = config.template.replace("{reply}", body).replace("{signature}", config.signature.strip())
        return filled.strip()
    greeting = GREETING[config.tone][lang]
    if name and lang == "en":
        first = name if _HONORIFIC.match(name.split()[0]) else name.split()[0]  # "Hi Mr. Tanaka,"
        greeting = NAMED_GREETING[config.tone].format(full=name, first=first)
    elif name and lang == "ja":
        greeting = f"{name}様\n\n{greeting}"
    parts = [greeting, body, CLOSING[config.tone][lang]]
    if config.signature.strip():
        parts.append(config.signature.strip())
    return "\n\n".join(p for p in parts if p)


def draft_reply(
    kb,
    model,
    message: str,
    config: DraftConfig | None = None,
    escalation=None,
    stop: threading.Event | None = None,
) -> Generator[Answer, None, Answer]:
    """Stream a reply draft for ``message``; the final text carries [n] citations for the agent."""
    config = config or DraftConfig()
    if not message.strip():
        raise ConfigError(NO_MESSAGE)
    query = Query.of(message.strip())  # analysed once, for the reply's language and the answer
    lang = query.lang
    name = customer_name(message)
    answer_config = AnswerConfig(
        max_new_tokens=config.max_new_tokens,
        history_turns=0,
        retrieval=RetrievalConfig(top_k=config.top_k, rerank_model=config.rerank_model),
        decompose=config.decompose,
        escalate=config.escalate,
        confidence_threshold=config.confidence_threshold,
        style=config.style,
    )
    answer = None
    for answer in answer_question(
        kb,
        model,
        query,
        config=answer_config,
        stop=stop,
        escalation=escalation,
        messages_fn=draft_messages(config.tone),
        finish=lambda body: compose(body, lang, config, name),
        search=about(message, kb),
    ):
        if answer.done and not answer.covered:
            # Nothing in the documents: a holding reply, and a person has to look at it.
            answer.text = compose(HOLDING[lang], lang, config, name)
            answer.needs_review = True
            answer.notice = (  # and why, when it is the message's language
                "No passage in the knowledge base covers this message; check the reply before "
                f"sending. {answer.notice}"
            ).strip()
        yield answer
    return answer
