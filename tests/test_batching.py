"""Batched generation: requests that arrive together are decoded together, each with its own
settings, and a stopped request leaves the batch while the others go on."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from assistant.generation.config import ModelConfig
from assistant.generation.local import ChatModel

PROMPTS = [
    "Write a long numbered list of tips for camping in the rain.",
    "Explain in detail how to pitch a tent on a windy beach.",
    "Describe, step by step, how to clean and store a sleeping bag after a trip.",
]


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def model(model_cache):
    # fp32: a row decoded beside others gives the same tokens as alone (bf16 may drift).
    return ChatModel(ModelConfig(precision="fp32", device="cpu", max_batch=4), model_cache)


def together(model, jobs: list[dict]) -> list[dict]:
    """Start every job at once (a barrier), each reading its stream in its own thread."""
    barrier = threading.Barrier(len(jobs))
    results = [dict(text="", info={}) for _ in jobs]

    def run(job, result):
        barrier.wait()
        stream = job.get("model", model).stream(
            ask(job["prompt"]),
            job["max_new_tokens"],
            job.get("temperature", 0.0),
            stop=job.get("stop"),
            info=result["info"],
        )
        for piece in stream:
            result["text"] += piece
            if job.get("on_piece"):
                job["on_piece"](stream, result)

    threads = [threading.Thread(target=run, args=(j, r)) for j, r in zip(jobs, results)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_a_reply_alone_is_what_generate_gives(model):
    import torch

    messages = ask(PROMPTS[2])
    inputs = model.encode_chat(messages)
    with torch.inference_mode():
        out = model.model.generate(**inputs, max_new_tokens=24, do_sample=False)
    expected = out[0, inputs["input_ids"].shape[1] :].tolist()
    info: dict = {}
    text = "".join(model.stream(messages, 24, info=info))
    assert info["token_ids"] == expected
    assert text == model.tokenizer.decode(expected, skip_special_tokens=True)


def test_requests_asked_together_share_one_batch_and_answer_as_they_would_alone(model):
    limits = [8, 24, 40]
    alone = []
    for prompt, limit in zip(PROMPTS, limits):
        info: dict = {}
        alone.append(("".join(model.stream(ask(prompt), limit, info=info)), info["new_tokens"]))
    model.batcher.widest = 0
    jobs = [dict(prompt=p, max_new_tokens=n) for p, n in zip(PROMPTS, limits)]
    batched = [(r["text"], r["info"]["new_tokens"]) for r in together(model, jobs)]
    assert model.batcher.widest >= 2  # they were decoded side by side, not one after another
    assert batched == alone  # each kept its own token limit, and padding changed nothing
    assert all(text.strip() for text, _ in batched)
    assert batched[0][1] <= 8


def test_a_stopped_request_leaves_the_batch_and_the_others_complete(model):
    alone = ["".join(model.stream(ask(p), 48)) for p in PROMPTS[1:]]
    stop = threading.Event()
    seen: dict[str, int] = {}
    # The two let go wait until the two that go on are decoding too, so all four are in the
    # batch then, however slowly the machine admits them one after another.
    going: set[int] = set()
    both_going = threading.Event()

    def going_on(stream, result):
        going.add(id(result))
        if len(going) == 2:
            both_going.set()

    def stop_once_all_decode(stream, result):
        if both_going.is_set() and not stop.is_set():
            seen["tokens_at_stop"] = result["info"]["new_tokens"]
            stop.set()

    def close_once_all_decode(stream, result):
        if both_going.is_set():
            seen["closed_at"] = result["info"]["new_tokens"]
            stream.close()  # a client that goes away

    jobs = [
        dict(prompt=PROMPTS[0], max_new_tokens=200, stop=stop, on_piece=stop_once_all_decode),
        dict(prompt=PROMPTS[1], max_new_tokens=48, on_piece=going_on),
        dict(prompt=PROMPTS[2], max_new_tokens=48, on_piece=going_on),
        dict(prompt=PROMPTS[0], max_new_tokens=200, on_piece=close_once_all_decode),
    ]
    model.batcher.widest = 0
    stopped, first, second, closed = together(model, jobs)
    assert model.batcher.widest >= 3
    # The stopped and the closed request generated at most one token after they were let go...
    assert stopped["info"]["new_tokens"] <= seen["tokens_at_stop"] + 1
    assert closed["info"]["new_tokens"] <= seen["closed_at"] + 1
    # ...while the others went on to the end, with the replies they give alone.
    assert [first["text"], second["text"]] == alone
    assert first["info"]["new_tokens"] > seen["tokens_at_stop"] + 5


def test_one_at_a_time_when_the_batch_is_one(model_cache, model):
    single = ChatModel(ModelConfig(precision="fp32", device="cpu", max_batch=1), model_cache)
    jobs = [dict(prompt=p, max_new_tokens=12) for p in PROMPTS]
    results = together(single, jobs)
    assert single.batcher.widest <= 1
    assert [r["text"] for r in results] == ["".join(model.stream(ask(p), 12)) for p in PROMPTS]


def test_sampling_rows_and_greedy_rows_share_a_batch(model):
    greedy_alone = "".join(model.stream(ask(PROMPTS[1]), 16))
    model.batcher.widest = 0
    jobs = [
        dict(prompt=PROMPTS[0], max_new_tokens=16, temperature=0.8),
        dict(prompt=PROMPTS[1], max_new_tokens=16),
    ]
    sampled, greedy = together(model, jobs)
    assert model.batcher.widest == 2
    assert sampled["text"].strip() and greedy["text"] == greedy_alone


def test_a_row_that_fails_fails_alone_and_the_model_goes_on(model):
    from assistant.generation.backend import ModelError

    alone = "".join(model.stream(ask(PROMPTS[1]), 12))
    failed: list[str] = []

    def broken():
        # A temperature this small leaves no finite probability to sample from.
        try:
            "".join(model.stream(ask(PROMPTS[0]), 12, temperature=1e-40))
        except ModelError as exc:
            failed.append(str(exc))

    thread = threading.Thread(target=broken)
    thread.start()
    assert "".join(model.stream(ask(PROMPTS[1]), 12)) == alone
    thread.join(timeout=60)
    assert failed and failed[0].startswith("Generation failed")
    assert "".join(model.stream(ask(PROMPTS[1]), 12)) == alone  # the next request is answered


def test_max_batch_is_validated():
    from knowledge.errors import ConfigError

    with pytest.raises(ConfigError, match="max_batch"):
        ModelConfig(max_batch=0)


def eventually(condition, seconds: float = 10) -> bool:
    """Whether ``condition()`` holds within ``seconds`` (the batch worker acts between steps)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def random_adapter(folder, model_cache, seed: int) -> str:
    """A LoRA adapter for the embedded model whose weights are random (not zero), so that it
    changes the replies; saved as training saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from assistant.generation.config import resolve_model_source

    base = AutoModelForCausalLM.from_pretrained(resolve_model_source("default", model_cache))
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, weight in lora.named_parameters():
            if "lora_" in name:  # A and B both drawn from the seed: the same adapter every run
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.1)
    lora.save_pretrained(folder)
    return str(folder)


def test_adapters_of_one_base_share_its_weights_and_its_batch(model_cache, tmp_path):
    """A base model and two adapters, asked at once, decode in one batch over one copy of the
    base weights, and each reply is the one peft's own generate gives for that adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from assistant.generation.config import resolve_model_source

    base = ChatModel(ModelConfig(precision="fp32", device="cpu", max_batch=4), model_cache)
    folders = [random_adapter(tmp_path / f"a{n}", model_cache, seed=n) for n in (1, 2)]
    first, second = (base.adapted(f) for f in folders)
    assert first.batcher is second.batcher is base.batcher and first.model is second.model
    assert base.adapted(folders[0]).adapter == first.adapter, "an adapter is loaded once"

    prompt = ask(PROMPTS[1])
    expected = []
    for folder in [None, *folders]:  # peft's generate, one model per adapter, as reference
        plain = AutoModelForCausalLM.from_pretrained(resolve_model_source("default", model_cache))
        reference = PeftModel.from_pretrained(plain, folder) if folder else plain
        inputs = base.encode_chat(prompt)
        with torch.inference_mode():
            out = reference.generate(**inputs, max_new_tokens=24, do_sample=False)
        expected.append(
            base.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        )
    assert len(set(expected)) == 3, "each adapter changes the reply"

    # Alone (the adapter made the active one), one after the other, and then together.
    alone = ["".join(m.stream(prompt, 24)) for m in (second, first, base)]
    assert alone == [expected[2], expected[1], expected[0]]
    base.batcher.widest = 0
    jobs = [dict(prompt=PROMPTS[1], max_new_tokens=24, model=m) for m in (base, first, second)]
    assert [r["text"] for r in together(base, jobs)] == expected
    assert base.batcher.widest == 3, "the base and both adapters decoded side by side"

    from assistant.generation.backend import ModelError
    from assistant.generation.cache import forget_models, load_chat_model, loaded_models

    # The process-wide cache: an adapter's model is its base model's, not a second copy.
    config = ModelConfig(precision="fp32", device="cpu", max_batch=4)
    shared = load_chat_model(config, model_cache)
    adapted, other = (load_chat_model(replace(config, adapter=f), model_cache) for f in folders)
    assert adapted.batcher is shared.batcher and adapted.label.endswith("+ a1 (fp32, cpu)")
    assert "".join(adapted.stream(prompt, 24)) == expected[1]
    # Deleted while a reply is written with it: the reply ends as it began, then it leaves;
    # the base and the other adapter stay loaded for everyone else.
    writing = adapted.stream(prompt, 64)
    text = next(writing)
    forget_models(folders[0])
    assert adapted.adapter in shared.batcher._leaving, "kept while its reply is written"
    assert (text + "".join(writing)).startswith(expected[1])
    assert shared in loaded_models() and folders[0] not in shared.batcher.adapters
    assert eventually(lambda: adapted.adapter not in shared.model.peft_config), "out once its reply was done"
    with pytest.raises(ModelError, match="was removed"):
        "".join(adapted.stream(prompt, 24))  # asked of the deleted one: one sentence
    assert ["".join(m.stream(prompt, 24)) for m in (other, shared)] == [expected[2], expected[0]]
    # Loaded again (a new tune in the same folder) beside the other: a name of its own.
    again = load_chat_model(replace(config, adapter=folders[0]), model_cache)
    assert ["".join(m.stream(prompt, 24)) for m in (again, other)] == [expected[1], expected[2]]
    # Both taken out while one of them writes beside a base row: each row keeps its own.
    base_reply, tuned_reply = shared.stream(prompt, 64), again.stream(prompt, 24)
    base_text, tuned_text = next(base_reply), next(tuned_reply)  # both in the batch
    for folder in folders:
        forget_models(folder)
    assert (base_text + "".join(base_reply)).startswith(expected[0])
    assert tuned_text + "".join(tuned_reply) == expected[1]
    assert eventually(lambda: not isinstance(shared.model, PeftModel)), "the last one out: plain layers"
    assert "".join(shared.stream(prompt, 24)) == expected[0]
    # One that does not fit is one sentence, and the base stays loaded as it was.
    with pytest.raises(ModelError, match="does not fit this base model"):
        load_chat_model(replace(config, adapter=str(tmp_path)), model_cache)
    assert shared in loaded_models() and "".join(shared.stream(prompt, 24)) == expected[0]


def test_an_adapter_that_half_fits_leaves_the_model_as_it_was(model_cache, tmp_path):
    """peft copies the weights that fit before it raises for the rest: a failed load takes the
    half-loaded adapter out again, whether it was the model's first adapter or one beside
    others, and its name is never given to the next adapter."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    from assistant.generation.backend import ModelError
    from assistant.generation.config import resolve_model_source

    bad = Path(random_adapter(tmp_path / "bad", model_cache, seed=3))
    weights = load_file(bad / "adapter_model.safetensors")
    for key, value in weights.items():  # q_proj fits; v_proj has twice the rank
        if "v_proj" in key:
            weights[key] = torch.cat([value, value], dim=0 if "lora_A" in key else 1)
    save_file(weights, bad / "adapter_model.safetensors")
    good = [random_adapter(tmp_path / f"good{n}", model_cache, seed=n) for n in (1, 2)]
    plain = AutoModelForCausalLM.from_pretrained(resolve_model_source("default", model_cache))
    reference = PeftModel.from_pretrained(plain, good[1])  # peft's own generate for the second

    model = ChatModel(ModelConfig(precision="fp32", device="cpu", max_batch=4), model_cache)
    prompt = ask(PROMPTS[1])
    inputs = model.encode_chat(prompt)
    with torch.inference_mode():
        out = reference.generate(**inputs, max_new_tokens=24, do_sample=False)
    second_expected = model.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    before = "".join(model.stream(prompt, 24))
    with pytest.raises(ModelError, match="does not fit this base model"):
        model.adapted(str(bad))  # the first adapter: peft wraps the model's layers
    assert "".join(model.stream(prompt, 24)) == before
    first = model.adapted(good[0])
    tuned = "".join(first.stream(prompt, 24))
    assert tuned != before
    with pytest.raises(ModelError, match="does not fit this base model"):
        model.adapted(str(bad))  # beside another adapter
    second = model.adapted(good[1])
    replies = ["".join(m.stream(prompt, 24)) for m in (model, first, second)]
    assert replies == [before, tuned, second_expected]
