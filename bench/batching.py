"""``python -m bench.batching``: the chat model alone under load, on this machine's CPU.

The check ``make gpu-check`` runs on CUDA (:func:`bench.gpu_check.batched_generation`): 16
threads streaming replies straight from the model, batched (the default) against one request at
a time (``max_batch=1``), with one client alone beside them; answers of 48 and 256 tokens, on
contoso prompts of about 1,200 tokens. ``bench.load`` measures the whole server, where
retrieval, evidence selection and the web stack share the cores with the model; this leaves
them out, so it shows what the batch itself can do here.

``python -m bench.batching [--seconds 60]`` writes ``bench/results/batching.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path

from bench.common import cpu_flags
from bench.gpu_check import batched_generation, batched_lines

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per path and answer length")
    parser.add_argument("--model-cache", type=Path, default=ROOT / "data" / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "batching.md")
    args = parser.parse_args()
    corpus = ROOT.parent / "shared" / "data" / "contoso-manuals"
    result = batched_generation(str(args.model_cache), str(corpus), args.seconds, device="cpu")
    text = "\n".join(
        [
            "# The model alone under load",
            "",
            f"`python -m bench.batching` · {dt.date.today()} · CPU flags: {cpu_flags()}, "
            f"{os.cpu_count()} cores, {args.seconds:.0f} s per path and length.",
            "",
            *batched_lines(result),
        ]
    )
    args.out.write_text(text + "\n", "utf-8")
    print(text)


if __name__ == "__main__":
    main()
