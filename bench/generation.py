"""Generation: time to first token and decode rate for a 5-passage RAG prompt, per precision.

Baseline: transformers ``pipeline("text-generation")`` with the same model in fp32, greedy.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from bench.common import isolated, median

QUESTIONS = [
    ("Is there a warranty on the TrailMaster X4 Tent?", "product_info_1.md"),
    ("Can the Adventurer Pro Backpack be used in rain?", "product_info_2.md"),
    ("How do I clean the camping stove?", "product_info_13.md"),
]


def rag_messages(corpus: Path, question: str, doc: str) -> list[dict]:
    """The app's prompt: the five passages retrieved from the question's manual, then the question."""
    import shutil
    import tempfile

    from assistant.answering.prompt import build_messages
    from knowledge.ingest import collect_sources, ingest_files
    from knowledge.library import Library
    from knowledge.progress import drive_events
    from knowledge.retrieve import RetrievalConfig, retrieve

    folder = Path(tempfile.mkdtemp())
    try:
        kb = Library(folder).create("bench")
        drive_events(ingest_files(kb, collect_sources([corpus / doc])))
        hits = retrieve(kb, question, RetrievalConfig(top_k=5, cutoff=False))
        kb.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return build_messages(question, hits, [], "en")


def run_tsumugi(
    precision: str, corpus: str, cache: str, new_tokens: int, repeats: int, device: str = "cpu"
) -> dict:
    from assistant.config import Settings, prepare_environment
    from assistant.generation.config import ModelConfig
    from assistant.generation.local import ChatModel

    prepare_environment(Settings())
    model = ChatModel(ModelConfig(precision=precision, device=device), Path(cache))
    prompts = [rag_messages(Path(corpus), q, d) for q, d in QUESTIONS]
    ttft, rates, outputs = [], [], []
    for i in range(repeats + 1):  # the first run warms up
        start = time.perf_counter()
        first = None
        text = ""
        for piece in model.stream(prompts[0], max_new_tokens=new_tokens):
            if first is None and piece:
                first = time.perf_counter() - start
            text += piece
        total = time.perf_counter() - start
        n = model.last_stats["new_tokens"]
        if i:
            ttft.append(first)
            rates.append((n - 1) / (total - first))
    for messages in prompts:
        outputs.append("".join(model.stream(messages, max_new_tokens=48)))
    return {
        "ttft_s": median(ttft),
        "decode_tps": median(rates),
        "prompt_tokens": model.last_stats["prompt_tokens"],
        "weight_bytes_per_token": weight_bytes(model.model),
        "outputs": outputs,
    }


def run_baseline(corpus: str, cache: str, new_tokens: int, repeats: int, device: str = "cpu") -> dict:
    import torch
    from transformers import TextIteratorStreamer, pipeline

    from assistant.config import Settings, prepare_environment
    from assistant.generation.config import prepare_embedded

    prepare_environment(Settings())
    folder = prepare_embedded(Path(cache))
    pipe = pipeline("text-generation", model=str(folder), dtype=torch.float32, device=device)
    messages = rag_messages(Path(corpus), *QUESTIONS[0])
    ttft, rates = [], []
    for i in range(repeats + 1):
        streamer = TextIteratorStreamer(pipe.tokenizer, skip_prompt=True)
        kwargs = dict(
            max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, streamer=streamer
        )
        thread = threading.Thread(target=pipe, args=(messages,), kwargs=kwargs)
        start = time.perf_counter()
        thread.start()
        first = None
        for piece in streamer:
            if first is None and piece:
                first = time.perf_counter() - start
        thread.join()
        total = time.perf_counter() - start
        if i:
            ttft.append(first)
            rates.append((new_tokens - 1) / (total - first))
    return {"ttft_s": median(ttft), "decode_tps": median(rates)}


def weight_bytes(model) -> int:
    """Bytes of weights read to generate one token (every layer, plus the output head)."""
    import torch

    total = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            continue  # one row is read per token
        if type(module).__name__ == "Linear" and module.__class__.__module__.startswith("torch.ao"):
            weight = module.weight()  # dynamic int8: packed int8 weights
            total += weight.numel() * weight.element_size()
            continue
        for param in module.parameters(recurse=False):
            total += param.numel() * param.element_size()
    head = model.get_output_embeddings()
    if head is not None and isinstance(getattr(head, "weight", None), torch.nn.Parameter):
        if head.weight is model.get_input_embeddings().weight:
            total += head.weight.numel() * head.weight.element_size()  # tied: read again as the head
    return int(total)


def run(corpus: Path, cache: Path, quick: bool, bandwidth_gbs: float, device: str = "cpu") -> list[dict]:
    new_tokens = 32 if quick else 64
    repeats = 2 if quick else 3
    rows = []
    baseline = isolated(run_baseline, str(corpus), str(cache), new_tokens, repeats, device)
    precisions = ["fp32", "bf16"] + ([] if quick else ["8bit", "4bit"])
    for precision in precisions:
        result = isolated(run_tsumugi, precision, str(corpus), str(cache), new_tokens, repeats, device)
        row = {
            "stage": "generation",
            "variant": precision,
            "baseline": "pipeline fp32 greedy",
            **result,
            "baseline_ttft_s": baseline.get("ttft_s"),
            "baseline_decode_tps": baseline.get("decode_tps"),
            "baseline_peak_rss_mb": baseline.get("peak_rss_mb"),
        }
        if "error" not in result and "error" not in baseline:
            row["ttft_ratio"] = baseline["ttft_s"] / result["ttft_s"]
            row["decode_ratio"] = result["decode_tps"] / baseline["decode_tps"]
            row["limit_tps"] = bandwidth_gbs * 1e9 / result["weight_bytes_per_token"]
        rows.append(row)
    return rows
