"""``make gpu-check``: the CUDA path, run on a GPU, written to ``bench/results/gpu.md``.

1. A quick QLoRA tune on CUDA (4-bit NF4 with double quantisation): validation loss before and
   after, tokens per second, peak GPU memory.
2. An 8-bit load and a greedy generation.
3. bf16 generation with the static KV cache against the dynamic one: the same greedy tokens,
   and the decode speed of each.
4. The bench's generation and training rows on CUDA, each with its baseline in the same run.

The report names the device. On a machine without CUDA it says so in one sentence and exits 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.common import isolated, machine

ROOT = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "user", "content": "How many people can sleep in a four-person tent, and why would two be more comfortable?"}]  # fmt: skip


def quick_qlora(cache: str) -> dict:
    import torch

    from assistant.generation.config import prepare_embedded
    from assistant.tuning.data import load_pairs
    from assistant.tuning.train import TuneConfig, train_lora
    from knowledge.progress import drive_events

    examples = load_pairs(ROOT / "tests" / "data" / "tune" / "kumo-lantern-qa.csv").examples
    config = TuneConfig.from_preset("quick", quant="4bit", device="cuda", compare_questions=0)
    with tempfile.TemporaryDirectory() as out:
        metrics = drive_events(
            train_lora(str(prepare_embedded(Path(cache))), examples[5:], examples[:5], config, Path(out))
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


def static_cache(cache: str) -> dict:
    """bf16 greedy decoding with the static and the dynamic KV cache: tokens and speed."""
    import torch

    from assistant.generation.config import ModelConfig
    from assistant.generation.local import ChatModel

    model = ChatModel(ModelConfig(precision="bf16", device="cuda"), Path(cache))
    inputs = model.encode_chat(PROMPT)
    out = {}
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
        out[name] = {"tokens": new, "tokens_per_s": len(new) / sorted(runs)[1]}
    out["same_tokens"] = out["static"]["tokens"] == out["dynamic"]["tokens"]
    return out


def report(info: dict, qlora: dict, eight: dict, static: dict, rows: list[dict]) -> str:
    """The Markdown of bench/results/gpu.md."""
    from bench.__main__ import table

    def fail(result: dict) -> str | None:
        return result.get("error")

    lines = [
        f"# GPU check on {info['gpu']}",
        "",
        f"CPU {info['cpu']}, torch {info['torch']}, Python {info['python']}.",
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
        "| bf16 generation, static KV cache | "
        + (
            fail(static)
            or f"same greedy tokens as the dynamic cache: {'yes' if static['same_tokens'] else 'NO'}; "
            f"{static['static']['tokens_per_s']:.0f} tokens/s static, "
            f"{static['dynamic']['tokens_per_s']:.0f} dynamic"
        )
        + " |",
        "",
        "## Bench rows on CUDA",
        "",
        table(rows, 0.0),
        "",
        "(The generation rows' \"limit\" is the CPU's memory-bandwidth bound and is not measured here.)",
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
    rows = generation.run(corpus, args.model_cache, args.quick, 0.0, device="cuda")
    rows += training.run(args.model_cache, args.quick, device="cuda")
    text = report(machine(), qlora, eight, static, rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, "utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
