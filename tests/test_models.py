"""Loading chat models: the embedded default, a local folder, each precision on CPU."""

from __future__ import annotations

import re

import pytest

from assistant.generation.backend import ModelError
from assistant.generation.config import ModelConfig, prepare_embedded
from assistant.generation.local import ChatModel
from assistant.generation.loops import is_looping, repeats_sentence
from knowledge.errors import ConfigError

MESSAGES = [{"role": "user", "content": "What colour is the sky on a clear day?"}]


def test_is_looping():
    assert is_looping([5, 6, 7, 8] * 4)
    assert is_looping([1] * 12)
    assert not is_looping(list(range(40)))
    assert not is_looping([1, 2] * 3)  # too short to call a loop


def test_repeats_sentence():
    text = "The tent has two doors. It is green. The tent has two doors. And"
    assert repeats_sentence(text)
    assert not repeats_sentence("The tent has two doors. It is green. It weighs 12 lbs. And")
    assert repeats_sentence("1. Keep it dry and clean. 2. Keep it dry and clean. 3.")


def test_auto_precision_follows_the_hardware():
    from pathlib import Path

    from knowledge.hardware import cpu_has_native_bf16

    assert not cpu_has_native_bf16({"avx2", "avx512f", "fma"})
    assert cpu_has_native_bf16({"avx2", "avx512_bf16"}) and cpu_has_native_bf16({"amx_bf16"})
    # This machine's answer, read here independently of the code under test.
    info = Path("/proc/cpuinfo").read_text(errors="ignore") if Path("/proc/cpuinfo").exists() else ""
    native = bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", info))
    assert ModelConfig(device="cpu").resolved_precision() == ("bf16" if native else "fp32")
    assert ModelConfig(precision="fp32", device="cpu").resolved_precision() == "fp32"


def test_config_validation():
    with pytest.raises(ConfigError, match="`precision`"):
        ModelConfig(precision="int3")
    with pytest.raises(ConfigError, match="`device`"):
        ModelConfig(device="tpu")


@pytest.mark.slow
def test_embedded_model_streams_with_its_chat_template(chat_model):
    pieces = list(chat_model.stream(MESSAGES, max_new_tokens=32))
    assert len(pieces) > 1, "expected streamed pieces"
    assert "blue" in "".join(pieces).lower()


@pytest.mark.slow
def test_loads_from_a_local_folder_in_bf16(model_cache, chat_model):
    folder = prepare_embedded(model_cache)
    assert (folder / "model.safetensors").exists() and (folder / "chat_template.jinja").exists()
    model = ChatModel(ModelConfig(name=str(folder), precision="bf16", device="cpu"), model_cache)
    assert str(model.model.dtype) == "torch.bfloat16"
    assert "".join(model.stream(MESSAGES, max_new_tokens=8)).strip()


@pytest.mark.slow
def test_greedy_output_is_repeatable(chat_model):
    first = "".join(chat_model.stream(MESSAGES, max_new_tokens=12))
    assert first == "".join(chat_model.stream(MESSAGES, max_new_tokens=12))


@pytest.mark.slow
@pytest.mark.bnb
@pytest.mark.parametrize("precision", ["8bit", "4bit"])
def test_quantized_on_cpu(model_cache, chat_model, precision):
    model = ChatModel(ModelConfig(precision=precision, device="cpu"), model_cache)
    footprint = model.model.get_memory_footprint()
    assert footprint < chat_model.model.num_parameters() * 4  # below fp32
    assert "".join(model.stream(MESSAGES, max_new_tokens=8)).strip()


def test_missing_model_is_a_clear_error(model_cache, tmp_path):
    with pytest.raises(ModelError, match="could not be loaded"):
        ChatModel(ModelConfig(name=str(tmp_path / "no-such-model"), device="cpu"), model_cache)


@pytest.mark.slow
def test_one_users_precision_choice_does_not_evict_anothers_model(model_cache):
    from assistant.generation.cache import load_chat_model, loaded_models

    fp32 = load_chat_model(ModelConfig(precision="fp32", device="cpu"), model_cache)
    bf16 = load_chat_model(ModelConfig(precision="bf16", device="cpu"), model_cache)
    assert bf16 is not fp32 and bf16.precision == "bf16"
    # The user still on fp32 keeps the very model already loaded, not a reload.
    assert load_chat_model(ModelConfig(precision="fp32", device="cpu"), model_cache) is fp32
    assert {fp32, bf16} <= set(loaded_models())
