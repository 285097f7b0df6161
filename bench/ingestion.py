"""Ingestion: chunks per second through parse, chunk, embed and store, against bare encoding.

Corpus: the contoso manuals copied until there are at least 2,000 chunks; each copy gets its
own first line so that deduplication does not skip it. Baseline: ``SentenceTransformer.encode``
(default settings: fp32) alone on the same chunk texts. Tsumugi's embedder computes in bf16
where the CPU does so natively (AVX512-BF16 or AMX), so there it can beat the baseline.
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
    growth = isolated(run_growth, str(contoso), quick)
    rows = [row]
    if "error" in growth:
        rows.append({"stage": "ingestion", "variant": "growth", "error": growth["error"]})
    else:
        small, large = (growth["sizes"][k] for k in sorted(growth["sizes"], key=int))
        rows.append(
            {
                "stage": "ingestion",
                "variant": "growth",
                "small": small,
                "large": large,
                "ratio": large["add_s"] / small["add_s"],
                "approximate": growth["approximate"],
            }
        )
    return rows


GROWTH_SIZES = (1_000, 100_000)
"""Knowledge-base sizes (chunks) the same document is added to."""
DOCUMENT_WORDS = 10_000
"""About 20 pages: the contoso manuals joined until this many words."""


def twenty_pages(contoso: Path, target: Path, edition: int) -> Path:
    words: list[str] = []
    for path in sorted(contoso.glob("*.md")):
        words += path.read_text("utf-8").split(" ")
        if len(words) >= DOCUMENT_WORDS:
            break
    path = target / f"handbook-{edition}.md"
    path.write_text(f"# Handbook, edition {edition}\n\n" + " ".join(words[:DOCUMENT_WORDS]), "utf-8")
    return path


def filled_knowledge_base(folder: Path, chunks: int, material) -> object:
    """A knowledge base of ``chunks`` stored chunks whose vectors are real contoso chunk vectors,
    each copy moved at random (by a vector of norm 0.6: a copy keeps a cosine of about 0.85 with
    its original), since embedding 100k real chunks would take an hour here."""
    import hashlib

    import numpy as np

    from knowledge.chunk import Chunk
    from knowledge.library import Library

    kb = Library(folder).create("growth")
    rng = np.random.default_rng(chunks)
    for start in range(0, chunks, 1_000):
        n = min(1_000, chunks - start)
        base = material[rng.integers(0, len(material), size=n)]
        vectors = base + 0.6 * rng.normal(size=base.shape) / np.sqrt(base.shape[1])
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        parts = [
            Chunk(f"Stored passage {start + i} about product {i % 97}.", None, (), 8, i) for i in range(n)
        ]
        digest = hashlib.sha256(f"{chunks}-{start}".encode()).hexdigest()
        kb.add_document(f"filler-{start}.md", digest.encode(), digest, digest, "md", None, parts, vectors)
    kb.save_index()
    return kb


def faq_questions() -> list[str]:
    import csv

    with open(
        Path(__file__).resolve().parents[1] / "tests" / "data" / "eval" / "contoso-faq.csv", encoding="utf-8"
    ) as fh:
        return [row["question"] for row in csv.DictReader(fh)]


def run_growth(contoso: str, quick: bool) -> dict:
    """Seconds to ingest one 20-page document into knowledge bases of each size, and the
    approximate index's recall@10 against exact search on the largest."""
    import numpy as np

    from assistant.config import Settings, prepare_environment
    from knowledge.embed import get_embedder
    from knowledge.ingest import collect_sources, ingest_files
    from knowledge.library import Library
    from knowledge.progress import drive_events
    from knowledge.vectors import IndexConfig, build

    prepare_environment(Settings())
    work = Path(tempfile.mkdtemp())
    try:
        seed = Library(work / "seed").create("seed")
        drive_events(ingest_files(seed, collect_sources([contoso])))
        _, material = seed.all_vectors()
        result: dict = {}
        edition = 0
        sizes = (1_000, 20_000) if quick else GROWTH_SIZES
        for size in sizes:
            kb = filled_knowledge_base(work / f"kb-{size}", size, material)
            times = []
            for _ in range(1 if quick else 3):
                edition += 1
                doc = twenty_pages(Path(contoso), work, edition)
                start = time.perf_counter()
                drive_events(ingest_files(kb, collect_sources([str(doc)])))
                times.append(time.perf_counter() - start)
            start = time.perf_counter()
            kb.vector_index.rebuild()  # what every add cost before the log: read and write it all
            result[size] = {"add_s": median(times), "rebuild_s": time.perf_counter() - start}
            result[size]["chunks"] = kb.count_chunks()
        ids, vectors = kb.all_vectors()
        flat = build(ids, vectors, vectors.shape[1], IndexConfig(approximate_above=10**9))
        approx = build(ids, vectors, vectors.shape[1], IndexConfig(approximate_above=0))
        queries = get_embedder().encode(faq_questions())  # real questions, as users ask them
        timings = {}
        found = {}
        for name, index in (("flat", flat), ("ivf", approx)):
            start = time.perf_counter()
            found[name] = [index.search(q.reshape(1, -1), 10)[1][0] for q in queries]
            timings[name] = (time.perf_counter() - start) / len(queries) * 1000
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found["ivf"], found["flat"])]))
        result["approximate"] = {
            "chunks": int(len(ids)),
            "cells": int(approx.nlist),
            "probes": int(approx.nprobe),
            "recall_at_10": recall,
            "flat_ms": timings["flat"],
            "ivf_ms": timings["ivf"],
        }
        approximate = result.pop("approximate")
        return {"sizes": {str(k): v for k, v in result.items()}, "approximate": approximate}
    finally:
        shutil.rmtree(work, ignore_errors=True)
