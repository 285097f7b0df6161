"""Retrieval: hybrid query latency (query embedding included) at 1k, 10k and 100k chunks.

The large knowledge bases are synthetic: each chunk is six sentences drawn at random from
the contoso manuals, and its vector the normalised mean of those sentences' real embeddings,
so that the vocabulary, the BM25 statistics and the vector distribution are realistic
without embedding 100,000 chunks. Queries are the contoso FAQ questions. Baseline: query
embedding plus a flat FAISS search on the same vectors.
"""

from __future__ import annotations

import random
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import isolated, percentile


def faq_questions(contoso: Path) -> list[str]:
    questions = []
    for path in sorted(contoso.glob("*.md")):
        faq = path.read_text("utf-8").split("## FAQ", 1)[1]
        questions += re.findall(r"^\d+\)\s*(.+\?)\s*$", faq, re.M)
    return questions


def run_sizes(contoso: str, sizes: list[int], queries: int) -> dict:
    import faiss

    from assistant.config import Settings, prepare_environment
    from knowledge.chunk import Chunk, split_sentences
    from knowledge.embed import get_embedder
    from knowledge.library import Library
    from knowledge.parse import parse_file
    from knowledge.retrieve import RetrievalConfig, retrieve

    prepare_environment(Settings())
    embedder = get_embedder()
    sentences = sorted(
        {
            s
            for p in Path(contoso).glob("*.md")
            for b in parse_file(p).blocks
            for s, _ in split_sentences(b.text)
            if len(s) > 20
        }
    )
    vectors = embedder.encode(sentences)
    rng = random.Random(0)
    folder = Path(tempfile.mkdtemp())
    kb = Library(folder).create("bench")
    questions = faq_questions(Path(contoso))[:queries]
    results = {}
    made = 0
    doc = 0
    try:
        for size in sizes:
            while made < size:
                n = min(100, size - made)
                picks = [rng.sample(range(len(sentences)), 6) for _ in range(n)]
                chunks = [
                    Chunk(" ".join(sentences[i] for i in p), None, (f"Synthetic {doc}",), 60, k)
                    for k, p in enumerate(picks)
                ]
                vecs = np.stack([vectors[p].mean(0) for p in picks]).astype(np.float32)
                vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
                data = f"synthetic {doc}".encode()
                kb.add_document(
                    f"synthetic-{doc}.md", data, f"{doc:064x}", f"t{doc:063x}", "markdown", None, chunks, vecs
                )
                made += n
                doc += 1
            kb.save_index()
            config = RetrievalConfig()
            retrieve(kb, "warm up the caches", config)
            ours = []
            for q in questions:
                start = time.perf_counter()
                retrieve(kb, q, config)
                ours.append(time.perf_counter() - start)
            _, stored = kb.all_vectors()
            flat = faiss.IndexFlatIP(stored.shape[1])
            flat.add(stored)
            base = []
            for q in questions:
                start = time.perf_counter()
                flat.search(embedder.encode([q]), 5)
                base.append(time.perf_counter() - start)
            results[size] = {
                "p50_ms": percentile(ours, 50) * 1000,
                "p95_ms": percentile(ours, 95) * 1000,
                "baseline_p50_ms": percentile(base, 50) * 1000,
                "baseline_p95_ms": percentile(base, 95) * 1000,
                "index": type(kb.index().index).__name__ if hasattr(kb.index(), "index") else "",
            }
    finally:
        kb.close()
        shutil.rmtree(folder, ignore_errors=True)
    return {"sizes": results}


def run(contoso: Path, quick: bool) -> list[dict]:
    sizes = [1000, 10000] if quick else [1000, 10000, 100000]
    result = isolated(run_sizes, str(contoso), sizes, 40 if quick else 80)
    if "error" in result:
        return [{"stage": "retrieval", "variant": "hybrid", "error": result["error"]}]
    rows = []
    for size, r in result["sizes"].items():
        rows.append(
            {
                "stage": "retrieval",
                "variant": f"hybrid, {int(size):,} chunks",
                "baseline": "embed + flat FAISS",
                **r,
                "p95_ratio": r["p95_ms"] / r["baseline_p95_ms"],
                "peak_rss_mb": result["peak_rss_mb"],
            }
        )
    return rows
