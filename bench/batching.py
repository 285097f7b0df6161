"""The model alone under load: closed-loop threads streaming replies straight from the chat
model, batched (the default) against one request at a time (``max_batch=1``), in one run.

``bench.load`` measures the whole server, where retrieval, evidence selection and the web stack
share the cores with the model. This stage leaves them out, so it shows what the batch itself
can do on this machine, and how much of the server's time goes elsewhere. Prompts are built as
the detailed style builds them: the system prompt and five passages cut from the contoso
manuals (about 1,200 tokens).

``python -m bench.batching [--clients 16] [--seconds 60] [--tokens 48]``
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from pathlib import Path

from bench.answers import SHARED
from bench.common import cpu_flags, percentile

ROOT = Path(__file__).resolve().parents[1]


def prompts(count: int, seed: int = 0) -> list[list[dict]]:
    from assistant.answering.prompt import SYSTEM_PROMPT

    text = "\n".join(p.read_text("utf-8") for p in sorted((SHARED / "contoso-manuals").glob("*.md")))
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        starts = [rng.randrange(len(text) - 1000) for _ in range(5)]
        passages = "\n\n".join(
            f"[{n}] (manual)\n<passage>\n{text[s : s + 950]}\n</passage>" for n, s in enumerate(starts, 1)
        )
        question = "Passages:\n\n" + passages + "\n\nQuestion: How heavy is it, and what is it made of?"
        out.append(
            [{"role": "system", "content": SYSTEM_PROMPT["en"]}, {"role": "user", "content": question}]
        )
    return out


def measure(max_batch: int, clients: int, seconds: float, tokens: int, model_cache: Path) -> dict:
    from assistant.generation.config import ModelConfig
    from assistant.generation.local import ChatModel

    model = ChatModel(ModelConfig(max_batch=max_batch), model_cache)
    asked = prompts(500)
    "".join(model.stream(asked[0], max_new_tokens=4))  # first-call costs out of the figure
    latencies: list[float] = []
    prompt_tokens: list[int] = []
    new_tokens: list[int] = []
    end = time.monotonic() + seconds

    def client(n: int) -> None:
        k = n
        while time.monotonic() < end:
            info: dict = {}
            started = time.perf_counter()
            "".join(model.stream(asked[k % len(asked)], max_new_tokens=tokens, info=info))
            latencies.append(time.perf_counter() - started)
            prompt_tokens.append(info["prompt_tokens"])
            new_tokens.append(info["new_tokens"])
            k += clients

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "max_batch": max_batch,
        "replies": len(latencies),
        "per_min": 60 * len(latencies) / wall,
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "prompt_tokens": sum(prompt_tokens) / max(1, len(prompt_tokens)),
        "new_tokens": sum(new_tokens) / max(1, len(new_tokens)),
        "widest": model.batcher.widest,
    }


def report(clients: int, seconds: float, tokens: int, model_cache: Path) -> str:
    rows = [measure(b, clients, seconds, tokens, model_cache) for b in (16, 1)]
    batched, single = rows
    lines = [
        f"CPU flags: {cpu_flags()}. {clients} threads for {seconds:.0f} s each, replies of at most "
        f"{tokens} tokens, prompts of {batched['prompt_tokens']:.0f} tokens on average.",
        "",
        "| path | replies/min | tokens per reply | p50 / p95 | widest batch |",
        "|---|---|---|---|---|",
    ]
    for name, r in (("batched (default, 16 rows)", batched), ("one at a time (max_batch=1)", single)):
        lines.append(
            f"| {name} | {r['per_min']:.1f} | {r['new_tokens']:.1f} | {r['p50_s']:.1f} / {r['p95_s']:.1f} s "
            f"| {r['widest']} |"
        )
    lines += ["", f"Throughput ×{batched['per_min'] / single['per_min']:.2f} one at a time."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--model-cache", type=Path, default=ROOT / "data" / "models")
    args = parser.parse_args()
    print(report(args.clients, args.seconds, args.tokens, args.model_cache))


if __name__ == "__main__":
    main()
