"""``make gpu-check``: the CUDA path, run on a GPU, written to ``bench/results/gpu.md``.

1. A quick QLoRA tune on CUDA (4-bit NF4 with double quantisation): validation loss before and
   after, tokens per second, peak GPU memory.
2. An 8-bit load and a greedy generation.
3. Generation with the static KV cache against the dynamic one, in fp32 and bf16: the same
   greedy tokens (fp32) or how many agree (bf16), and the decode speed of each.
4. Batched generation: 16 concurrent requests on contoso prompts of about 1,200 tokens, through
   the model's batcher against one request at a time (``max_batch=1``), with one client alone
   as the latency a single user sees; answers of 48 and 256 tokens.
5. The bench's generation and training rows on CUDA, each with its baseline in the same run.

The report names the device. On a machine without CUDA it says so in one sentence and exits 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.common import isolated, machine, percentile, without_faq

ROOT = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "user", "content": "How many people can sleep in a four-person tent, and why would two be more comfortable?"}]  # fmt: skip


def quick_qlora(cache: str) -> dict:
    import torch

    from assistant.generation.config import prepare_embedded
    from assistant.tuning.data import load_pairs
    from assistant.tuning.train import TuneConfig, train_lora
    from knowledge.progress import drive_events

    config = TuneConfig.from_preset("quick", quant="4bit", device="cuda", compare_questions=0)
    # The tune job's own split: its validation pairs ask, in other words, about facts the
    # training pairs teach (the first five alone all ask who makes the lantern).
    pairs = load_pairs(ROOT / "tests" / "data" / "tune" / "kumo-lantern-qa.csv")
    train, validation = pairs.split(config.validation_fraction, config.min_validation, config.seed)
    with tempfile.TemporaryDirectory() as out:
        metrics = drive_events(
            train_lora(str(prepare_embedded(Path(cache))), train, validation, config, Path(out))
        )
    return {
        "val_loss_before": metrics["val_loss_before"],
        "val_loss_after": metrics["val_loss_after"],
        "tokens_per_s": metrics["tokens_per_s"],
        "peak_gpu_mb": metrics.get("peak_gpu_mb"),
        "torch_cuda": torch.version.cuda,
    }


def eight_bit(cache: str) -> dict:
    from assistant.generation.config import ModelConfig
    from assistant.generation.local import ChatModel

    model = ChatModel(ModelConfig(precision="8bit", device="cuda"), Path(cache))
    start = time.perf_counter()
    text = "".join(model.stream(PROMPT, max_new_tokens=48))
    return {"text": text, "seconds": time.perf_counter() - start, "label": model.label}


def _agreeing(a: list[int], b: list[int]) -> int:
    """How many leading tokens two greedy replies share."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def static_cache(cache: str) -> dict:
    """Greedy decoding with the static KV cache (which transformers compiles) against the
    dynamic one, in fp32 and bf16: the tokens each writes, and the decode speed of each.

    fp32 is where the two must agree token for token; in bf16 the compiled kernels round
    differently, and a near-tie between two tokens can go the other way, so there the check
    reports how many leading tokens agree."""
    import torch

    from assistant.generation.config import ModelConfig
    from assistant.generation.local import ChatModel

    out = {}
    for precision in ("fp32", "bf16"):
        model = ChatModel(ModelConfig(precision=precision, device="cuda"), Path(cache))
        inputs = model.encode_chat(PROMPT)
        runs_of = {}
        for name, extra in (("dynamic", {}), ("static", {"cache_implementation": "static"})):
            runs = []
            for _ in range(3):
                torch.cuda.synchronize()
                start = time.perf_counter()
                with torch.inference_mode():
                    tokens = model.model.generate(**inputs, max_new_tokens=64, do_sample=False, **extra)
                torch.cuda.synchronize()
                runs.append(time.perf_counter() - start)
            new = tokens[0, inputs["input_ids"].shape[1] :].tolist()
            runs_of[name] = {"tokens": new, "tokens_per_s": len(new) / sorted(runs)[1]}
        runs_of["agreeing"] = _agreeing(runs_of["static"]["tokens"], runs_of["dynamic"]["tokens"])
        runs_of["same_tokens"] = runs_of["static"]["tokens"] == runs_of["dynamic"]["tokens"]
        out[precision] = runs_of
        del model
        torch.cuda.empty_cache()
    return out


def static_line(static: dict) -> str:
    """The static-cache check's cell."""
    if "error" in static:
        return static["error"]
    fp32, bf16 = static["fp32"], static["bf16"]
    return (
        f"fp32: same greedy tokens as the dynamic cache: {'yes' if fp32['same_tokens'] else 'NO'} "
        f"({fp32['static']['tokens_per_s']:.0f} tokens/s static, {fp32['dynamic']['tokens_per_s']:.0f} dynamic); "
        f"bf16: the first {bf16['agreeing']} of {len(bf16['dynamic']['tokens'])} tokens the same "
        f"({bf16['static']['tokens_per_s']:.0f} tokens/s static, {bf16['dynamic']['tokens_per_s']:.0f} dynamic)"
    )


CLIENTS = 16
"""Concurrent requests in the batched check: the 8 web and 8 API clients of bench/load.py."""


def contoso_prompts(corpus: Path, chars: int = 4500) -> dict[str, list[dict]]:
    """A chat for each contoso FAQ question (the questions of bench/load.py): its manual (FAQ
    removed, cut to about 1,100 tokens) as the passage, then the question. The model's work is
    the app's; retrieval is not timed."""
    import csv

    with open(ROOT / "tests" / "data" / "eval" / "contoso-faq.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    chats = {}
    for row in rows:
        manual = without_faq((corpus / row["source"]).read_text("utf-8"))
        content = f"Passages:\n[1] {manual[:chars]}\n\nQuestion: {row['question']}"
        chats[row["question"]] = [{"role": "system", "content": "Answer from the passages and cite them as [1]."},
                                  {"role": "user", "content": content}]  # fmt: skip
    return chats


def _clients(model, chats: dict[str, list[dict]], clients: int, seconds: float, new_tokens: int) -> dict:
    """``clients`` threads asking in turn for ``seconds`` (bench/load.py's clients, on the
    model itself): answers a minute, p50/p95, errors."""
    import threading

    from bench.load import ask_until

    latencies: list[float] = []
    errors: list[str] = []
    stop_at = time.time() + seconds

    def ask(question: str) -> str:
        return "".join(model.stream(chats[question], max_new_tokens=new_tokens))

    began = time.monotonic()
    threads = [
        threading.Thread(target=ask_until, args=("model", ask, stop_at, latencies, errors, k))
        for k in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    return {
        "clients": clients,
        "answers": len(latencies),
        "per_min": 60 * len(latencies) / elapsed,
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def batched_generation(cache: str, corpus: str, seconds: float = 20.0, device: str = "cuda") -> dict:
    """The batcher under :data:`CLIENTS` concurrent requests against one request at a time."""
    from assistant.generation.config import ModelConfig
    from assistant.generation.local import ChatModel

    chats = contoso_prompts(Path(corpus))
    batched = ChatModel(ModelConfig(device=device), Path(cache))
    alone = ChatModel(ModelConfig(device=device, max_batch=1), Path(cache))
    prompt_tokens = [len(batched.encode_chat(c)["input_ids"][0]) for c in chats.values()]
    for model in (batched, alone):  # kernels and allocator warmed before anything is timed
        "".join(model.stream(next(iter(chats.values())), max_new_tokens=8))
    out = {"label": batched.label, "prompt_tokens": percentile(prompt_tokens, 50), "lengths": {}}
    for new_tokens in (48, 256):
        single = _clients(batched, chats, 1, seconds, new_tokens)
        baseline = _clients(alone, chats, CLIENTS, seconds, new_tokens)
        load = _clients(batched, chats, CLIENTS, seconds, new_tokens)
        out["lengths"][new_tokens] = {
            "single": single,
            "one_at_a_time": baseline,
            "batched": load,
            "throughput_ratio": load["per_min"] / baseline["per_min"],
            "p95_ratio": load["p95_s"] / single["p95_s"],
        }
    return out


def batched_lines(result: dict) -> list[str]:
    """The batched check's table, or the sentence saying why it did not run."""
    if "error" in result:
        return [f"Batched generation: {result['error']}"]
    lines = [
        f"`{result['label']}`, {CLIENTS} concurrent requests, prompts of about "
        f"{result['prompt_tokens']:.0f} tokens (contoso manuals with a FAQ question).",
        "",
        "| answer length | path | clients | answers/min | p50 / p95 | errors |",
        "|---|---|---|---|---|---|",
    ]
    for new_tokens, r in result["lengths"].items():
        for name, key in (("one client alone", "single"), ("one at a time (max_batch=1)", "one_at_a_time"),
                          ("batched (default)", "batched")):  # fmt: skip
            x = r[key]
            lines.append(
                f"| {new_tokens} tokens | {name} | {x['clients']} | {x['per_min']:.0f} | "
                f"{x['p50_s']:.2f} / {x['p95_s']:.2f} s | {x['errors']} |"
            )
    lines.append("")
    for new_tokens, r in result["lengths"].items():
        lines.append(
            f"- {new_tokens} tokens: throughput ×{r['throughput_ratio']:.2f} the one-at-a-time path "
            f"(target ≥ ×3); p95 under load ×{r['p95_ratio']:.2f} a single client's (target ≤ ×3)."
        )
    return lines


def report(info: dict, qlora: dict, eight: dict, static: dict, batched: dict, rows: list[dict]) -> str:
    """The Markdown of bench/results/gpu.md."""
    from bench.__main__ import table

    def fail(result: dict) -> str | None:
        return result.get("error")

    lines = [
        f"# GPU check on {info['gpu']}",
        "",
        f"CPU {info['cpu']} ({info.get('cores')} cores; flags: {info.get('cpu_flags')}), "
        f"torch {info['torch']}, Python {info['python']}.",
        "",
        "| check | result |",
        "|---|---|",
        "| QLoRA quick tune (4-bit NF4, double quantisation) | "
        + (
            fail(qlora)
            or f"validation loss {qlora['val_loss_before']:.3f} → {qlora['val_loss_after']:.3f}, "
            f"{qlora['tokens_per_s']:.0f} tokens/s, peak {qlora['peak_gpu_mb'] or 0:.0f} MB of GPU memory"
        )
        + " |",
        "| 8-bit load and greedy generation | "
        + (fail(eight) or f"`{eight['label']}`: {eight['text'][:80]!r}… in {eight['seconds']:.1f} s")
        + " |",
        "| generation with the static KV cache (compiled) | " + static_line(static) + " |",
        "",
        "## Batched generation on CUDA",
        "",
        *batched_lines(batched),
        "",
        "## Bench rows on CUDA",
        "",
        *(
            [
                table(rows, 0.0),
                "",
                "(The generation rows' \"limit\" is the CPU's memory-bandwidth bound and is not measured here.)",
            ]
            if rows
            else ["Not run in this report."]
        ),
        "",
        "Reproduce: `make gpu-check`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check")
    parser.add_argument("--model-cache", type=Path, default=ROOT / "data" / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu.md")
    parser.add_argument("--quick", action="store_true", help="the bench rows at their quick sizes")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("No CUDA GPU here: run `make gpu-check` on a machine with one.", file=sys.stderr)
        return 2
    from bench import generation, training

    cache = str(args.model_cache)
    qlora = isolated(quick_qlora, cache)
    eight = isolated(eight_bit, cache)
    static = isolated(static_cache, cache)
    corpus = ROOT.parent / "shared" / "data" / "contoso-manuals"
    batched = isolated(batched_generation, cache, str(corpus))
    rows = generation.run(corpus, args.model_cache, args.quick, 0.0, device="cuda")
    rows += training.run(args.model_cache, args.quick, device="cuda")
    text = report(machine(), qlora, eight, static, batched, rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, "utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
