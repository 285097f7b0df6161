"""An adapter exported for Ollama: a Modelfile whose TEMPLATE, read as Ollama reads it (Go's
text/template over ``.Messages``), gives exactly the prompt the tokenizer's chat template gives,
and a refusal for chat templates that cannot be written that way."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.tuning.ollama import chat_shape
from knowledge.errors import ConfigError
from tests import gotemplate
from tests.conftest import untrained_adapter

CONVERSATIONS = [
    [{"role": "user", "content": "Can I wash the RainGuard jacket?"}],
    [{"role": "system", "content": "Answer as Contoso support."}, {"role": "user", "content": "Hi"}],
    [
        {"role": "user", "content": "返品はできますか？\n注文番号は 1234 です。"},
        {"role": "assistant", "content": "はい、30日以内なら返品できます。"},
        {"role": "user", "content": "送料は？"},
    ],
    [
        {"role": "system", "content": "Be brief.\n\nCite the manual."},
        {"role": "user", "content": "Tent  size?"},
        {"role": "assistant", "content": "  4 people. "},
        {"role": "user", "content": ""},
    ],
]
"""Not the exporter's own probes: other turns, spacing and an empty message."""


def ollama_render(template: str, messages: list[dict]) -> str:
    return gotemplate.render(
        template, {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model_cache):
    from assistant.serving.service import Tsumugi

    app = Tsumugi(Settings(data_dir=tmp_path_factory.mktemp("ollama-data"), model_cache=model_cache))
    name = untrained_adapter(app, "helpdesk")
    return app, app.export_adapter(name, tmp_path_factory.mktemp("out"), serve_with="ollama")


def test_the_modelfile_template_gives_the_prompt_the_adapter_was_trained_with(exported, model_cache):
    from transformers import AutoTokenizer

    from assistant.generation.config import resolve_model_source

    app, folder = exported
    modelfile = (folder / "Modelfile").read_text(encoding="utf-8")
    template = re.search(r'^TEMPLATE """(.*?)"""$', modelfile, re.S | re.M).group(1)
    base = resolve_model_source(app.settings.model.name, model_cache)
    trained_with = AutoTokenizer.from_pretrained(base)  # the tokenizer tuning used
    for conversation in CONVERSATIONS:
        expected = trained_with.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        assert ollama_render(template, conversation) == expected
    # The rest of what Ollama reads: the base weights, the adapter, where a reply ends.
    from_line = re.search(r"^FROM (.+)$", modelfile, re.M).group(1)
    assert (Path(from_line) / "config.json").is_file()
    assert "\nADAPTER ./adapter\n" in modelfile
    adapter = folder / "adapter"
    assert {p.name for p in adapter.iterdir()} == {"adapter_config.json", "model.safetensors"}
    trained = app.adapters.get("helpdesk").path / "adapter_model.safetensors"
    assert (adapter / "model.safetensors").read_bytes() == trained.read_bytes()
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    serve = (folder / "SERVE.md").read_text(encoding="utf-8")
    assert "ollama create helpdesk -f Modelfile" in serve and str(folder) in serve


def test_a_template_that_looks_at_content_or_position_is_refused(model_cache):
    from transformers import AutoTokenizer

    from assistant.generation.config import resolve_model_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source("smollm2-135m-instruct", model_cache))
    shape = chat_shape(tokenizer, "smollm2")
    assert shape.opening.startswith("<|im_start|>system\n")  # its default system prompt
    assert shape.around["user"] == ("<|im_start|>user\n", "<|im_end|>\n")
    # Only the last user message is wrapped differently: Ollama's template could not know it.
    tokenizer.chat_template = (
        "{% for m in messages %}{% if loop.last %}[LAST]{% endif %}"
        "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(ConfigError, match="cannot be written as an Ollama TEMPLATE.*--for vllm"):
        chat_shape(tokenizer, "odd-model")
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] | trim }}\n{% endfor %}"
    with pytest.raises(ConfigError, match="cannot be written"):
        chat_shape(tokenizer, "trimming-model")
    # A Llama-3-style template (a start-of-text marker, headers per role) is written faithfully.
    tokenizer.chat_template = (
        "{{ '<|begin_of_text|>' }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    )
    llama = chat_shape(tokenizer, "llama-like")
    for conversation in CONVERSATIONS:
        expected = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        assert ollama_render(llama.go_template(), conversation) == expected


def test_an_unknown_server_or_a_base_ollama_cannot_adapt_is_refused(exported, tmp_path):
    from assistant.tuning.ollama import check_ollama_base

    app, _ = exported
    with pytest.raises(ConfigError, match="vllm or ollama"):
        app.export_adapter("helpdesk", tmp_path, serve_with="tgi")
    (tmp_path / "config.json").write_text('{"model_type": "qwen2"}', encoding="utf-8")
    with pytest.raises(ConfigError, match="is qwen2; serve this adapter with vLLM"):
        check_ollama_base(str(tmp_path), "Qwen/Qwen2-0.5B-Instruct")
