"""Ingestion: chunks per second through parse, chunk, embed and store, against bare encoding.

Corpus: the contoso manuals copied until there are at least 2,000 chunks; each copy gets its
own first line so that deduplication does not skip it. Baseline: ``SentenceTransformer.encode``
(default settings) alone on the same chunk texts.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from bench.common import isolated, median


def make_corpus(source: Path, target: Path, min_chunks: int, chunks_per_copy: int) -> int:
    copies = -(-min_chunks // chunks_per_copy)
    for copy in range(copies):
        for path in sorted(source.glob("*.md")):
            text = path.read_text("utf-8")
            (target / f"{path.stem}-copy{copy}.md").write_text(f"Edition {copy}\n\n{text}", "utf-8")
    return copies


def run_pipeline(corpus: str, repeats: int) -> dict:
    from assistant.config import Settings, prepare_environment
    from knowledge.embed import get_embedder
    from knowledge.ingest import collect_sources, ingest_files
    from knowledge.library import Library
    from knowledge.progress import drive_events

    prepare_environment(Settings())
    get_embedder().encode(["warm up"])
    times, chunks = [], 0
    for _ in range(repeats):
        folder = Path(tempfile.mkdtemp())
        kb = Library(folder).create("bench")
        start = time.perf_counter()
        drive_events(ingest_files(kb, collect_sources([corpus])))
        times.append(time.perf_counter() - start)
        chunks = kb.count_chunks()
        texts = [(h + "\n" + t) if h else t for _, h, t in kb.iter_chunk_texts()]
        kb.close()
        shutil.rmtree(folder)
    Path(corpus, ".texts").write_text("\x00".join(texts), "utf-8")
    return {"chunks": chunks, "seconds": median(times), "chunks_per_s": chunks / median(times)}


def run_encode(corpus: str, repeats: int) -> dict:
    from sentence_transformers import SentenceTransformer

    from knowledge.embed import embedded_model_path

    texts = Path(corpus, ".texts").read_text("utf-8").split("\x00")
    model = SentenceTransformer(str(embedded_model_path()), device="cpu")
    model.encode(["warm up"])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.encode(texts)
        times.append(time.perf_counter() - start)
    return {"chunks": len(texts), "seconds": median(times), "chunks_per_s": len(texts) / median(times)}


def run(contoso: Path, quick: bool) -> list[dict]:
    work = Path(tempfile.mkdtemp())
    try:
        make_corpus(contoso, work, 500 if quick else 2000, 387)
        repeats = 1 if quick else 3
        ours = isolated(run_pipeline, str(work), repeats)
        base = isolated(run_encode, str(work), repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    row = {
        "stage": "ingestion",
        "variant": "parse+chunk+embed+store",
        "baseline": "SentenceTransformer.encode",
        **{f"ours_{k}": v for k, v in ours.items()},
        **{f"baseline_{k}": v for k, v in base.items()},
    }
    if "error" not in ours and "error" not in base:
        row["overhead"] = ours["seconds"] / base["seconds"] - 1
    return [row]
