"""``python -m bench``: every stage against its named baseline, in one run.

Prints a Markdown table, writes ``bench/results/<time>.json`` and ``bench/results/latest.md``.
``--quick`` runs smaller sizes (for a smoke test); ``--only`` picks stages (``answers``,
``retrieval_quality`` and ``load`` run on their own and write their own reports).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

from bench import answers, generation, ingestion, load, retrieval, retrieval_quality, training
from bench.answers import CORPORA
from bench.common import machine, memory_bandwidth_gbs

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def fmt(value, spec=".2f") -> str:
    return "–" if value is None else format(value, spec)


def table(rows: list[dict], bandwidth: float) -> str:
    lines = ["| stage | Tsumugi | baseline in the same run | ratio |", "|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['stage']} ({r.get('variant', '')}) | error: {r['error']} | | |")
            continue
        if r["stage"] == "ingestion" and r.get("variant") == "growth":
            small, large, approx = r["small"], r["large"], r["approximate"]
            lines.append(
                f"| adding a 20-page document to {large['chunks']:,} chunks | {large['add_s']:.2f} s "
                f"(rebuilding the whole index instead: +{large['rebuild_s']:.2f} s) | "
                f"to {small['chunks']:,} chunks: {small['add_s']:.2f} s | ×{r['ratio']:.2f} (target ≤ ×1.5) |"
            )
            lines.append(
                f"| approximate index (IVF, {approx['cells']} cells, {approx['probes']} probes), "
                f"{approx['chunks']:,} chunks | recall@10 {approx['recall_at_10']:.3f}, {approx['ivf_ms']:.2f} ms/query | "
                f"exact flat search: {approx['flat_ms']:.2f} ms/query | ×{approx['flat_ms'] / approx['ivf_ms']:.1f} faster |"
            )
        elif r["stage"] == "ingestion":
            lines.append(
                f"| ingestion, {r['ours_chunks']:,} chunks | {r['ours_chunks_per_s']:.1f} chunks/s, "
                f"peak {r['ours_peak_rss_mb']:.0f} MB | {r['baseline']}: {r['baseline_chunks_per_s']:.1f} chunks/s, "
                f"peak {r['baseline_peak_rss_mb']:.0f} MB | overhead {r['overhead']:+.1%} |"
            )
        elif r["stage"] == "retrieval":
            lines.append(
                f"| retrieval, {r['variant']} | p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms | "
                f"{r['baseline']}: p50 {r['baseline_p50_ms']:.1f} ms, p95 {r['baseline_p95_ms']:.1f} ms | "
                f"p95 ×{r['p95_ratio']:.2f} |"
            )
        elif r["stage"] == "generation":
            lines.append(
                f"| generation, {r['variant']} ({r['prompt_tokens']}-token RAG prompt) | first token "
                f"{r['ttft_s']:.2f} s, decode {r['decode_tps']:.1f} tok/s, peak {r['peak_rss_mb']:.0f} MB; "
                f"limit {r['limit_tps']:.0f} tok/s ({r['weight_bytes_per_token'] / 1e6:.0f} MB of weights per "
                f"token at {bandwidth:.0f} GB/s) | {r['baseline']}: first token {fmt(r['baseline_ttft_s'])} s, "
                f"decode {fmt(r['baseline_decode_tps'], '.1f')} tok/s, peak {fmt(r['baseline_peak_rss_mb'], '.0f')} MB | "
                f"first token ×{r['ttft_ratio']:.2f} faster, decode ×{r['decode_ratio']:.2f} |"
            )
        elif r["stage"] == "training":
            lines.append(
                f"| training, {r['variant']}, 1 epoch of {r['examples']} FAQ pairs | "
                f"{r['ours_tokens_per_s']:.0f} tokens/s, peak {r['ours_peak_rss_mb']:.0f} MB, "
                f"validation loss {r['ours_val_loss']:.3f} | {r['baseline']}: {r['baseline_tokens_per_s']:.0f} "
                f"tokens/s, peak {r['baseline_peak_rss_mb']:.0f} MB, validation loss {r['baseline_val_loss']:.3f} | "
                f"×{r['speedup']:.2f} tokens/s, memory ×{r['memory_ratio']:.2f} |"
            )
    return "\n".join(lines)


def outputs_section(rows: list[dict]) -> str:
    gens = [r for r in rows if r["stage"] == "generation" and "outputs" in r]
    if not gens:
        return ""
    parts = ["## Greedy outputs side by side (48 new tokens, same RAG prompts)", ""]
    for i, (question, _) in enumerate(generation.QUESTIONS):
        parts.append(f"**{question}**\n")
        for r in gens:
            text = r["outputs"][i].replace("\n", " ").strip()
            parts.append(f"- {r['variant']}: {text}")
        parts.append("")
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer repeats")
    parser.add_argument(
        "--only",
        nargs="*",
        choices=["ingestion", "retrieval", "generation", "training", "answers", "retrieval_quality", "load"],
    )
    parser.add_argument("--questions", type=int, default=25, help="answers: questions per corpus")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--model-cache", type=Path, default=ROOT / "data" / "models")
    parser.add_argument(
        "--merge", action="store_true", help="keep the other stages' rows from the previous latest.json"
    )
    args = parser.parse_args()
    stages = args.only or ["ingestion", "retrieval", "generation", "training"]
    if stages == ["answers"]:
        # Its own report, one table per corpus: bench/results/answers.md.
        answers.run(args.questions, model_cache=args.model_cache)
        print((args.out / "answers.md").read_text("utf-8"))
        return
    if stages == ["retrieval_quality"]:
        # Its own report too: bench/results/retrieval_quality.md, every corpus and ranker.
        print(retrieval_quality.report(list(CORPORA), 500, retrieval_quality.DATA, args.model_cache, [112]))
        return
    if stages == ["load"]:
        # Its own report: bench/results/load.md, the batched path against one at a time.
        print(load.report(model_cache=args.model_cache))
        return
    if {"answers", "retrieval_quality", "load"} & set(stages):
        alone = next(s for s in ("answers", "retrieval_quality", "load") if s in stages)
        parser.error(f"run {alone} on its own: python -m bench --only {alone}")
    contoso = SHARED / "data" / "contoso-manuals"
    info = machine()
    bandwidth = memory_bandwidth_gbs()
    info["memory_bandwidth_gbs"] = round(bandwidth, 1)
    rows: list[dict] = []
    if "ingestion" in stages:
        rows += ingestion.run(contoso, args.quick)
    if "retrieval" in stages:
        rows += retrieval.run(contoso, args.quick)
    if "generation" in stages:
        rows += generation.run(contoso, args.model_cache, args.quick, bandwidth)
    if "training" in stages:
        rows += training.run(args.model_cache, args.quick)
    previous = args.out / "latest.json"
    if args.merge and previous.exists():
        kept = [r for r in json.loads(previous.read_text("utf-8"))["rows"] if r["stage"] not in stages]
        rows = kept + rows
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    report = "\n".join(
        [
            f"# Benchmark {stamp}{' (quick)' if args.quick else ''}",
            "",
            f"Machine: {info['cpu']} (flags: {info.get('cpu_flags', '?')}), {info['cores']} cores, "
            f"{info['memory_gb']} GB, GPU: {info['gpu'] or 'none'}, "
            f"torch {info['torch']} ({info['torch_threads']} threads), measured copy bandwidth "
            f"{info['memory_bandwidth_gbs']} GB/s.",
            "",
            "Medians over repeated runs; ratios compare with the baseline measured in the same run.",
            "",
            table(rows, bandwidth),
            "",
            outputs_section(rows),
            "Reproduce: `make bench` (or `.venv/bin/python -m bench`).",
        ]
    )
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stamp}.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2), "utf-8")
    (args.out / "latest.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2), "utf-8")
    (args.out / "latest.md").write_text(report + "\n", "utf-8")


if __name__ == "__main__":
    main()
