"""Batched generation: requests that arrive together are decoded together, each with its own
settings, and a stopped request leaves the batch while the others go on."""

from __future__ import annotations

import threading

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
        stream = model.stream(
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
