"""``python -m bench.retrieval_quality``: does Tsumugi's retrieval find the answer's passage,
against textbook rankers measured in the same run, on every development corpus?

Corpora (from ``bench/answers.py``): contoso with the FAQ sections removed (the FAQ questions
ask), JaQuAD dev (an even sample of its questions), and the en-support and ja-support sets.

Rankers, all scored on recall@1, recall@5 and MRR@10:

- textbook baselines over 800-character chunks: dense (the embedded MiniLM, cosine), BM25
  (Okapi, k1=1.5, b=0.75; words for English, character bigrams for Japanese), and plain
  reciprocal-rank fusion of the two (k=60);
- Tsumugi over its own chunks: ``dense``, ``lexical`` and the default ``hybrid`` (reciprocal
  rank fusion), each without the relevance cut-off (the cut-off decides what to show, not the
  order);
- the choices behind the default, on the same chunks: other fusions of Tsumugi's own dense
  and lexical candidates (the per-query weights used before, min-max score fusion at one
  weight), BM25 on plain terms against what Tsumugi indexes (dictionary words; Okapi, so only
  the terms differ), English words stemmed (Snowball; alone and fused with Tsumugi's dense
  side by plain RRF: measured, not adopted), and passage sizes and overlap (``--chunk-sizes``).

A hit: a passage of the gold document that holds the answer (Japanese: the answer string;
English: at least half of the answer's words). ``--data DIR`` keeps the ingested corpora.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import time
from collections import Counter, deque
from pathlib import Path

import numpy as np

from bench.answers import CORPORA, RESULTS, _sample
from bench.common import cpu_flags

BASELINE_CHARS = 800
RRF_K = 60
DEPTH = 10
CANDIDATES = 50
"""Passages each side contributes to the fusions compared (as Tsumugi's ``candidates``)."""
TSUMUGI_RANKERS = {
    "Tsumugi dense": dict(mode="dense"),
    "Tsumugi lexical": dict(mode="lexical"),
    "Tsumugi hybrid (default)": dict(mode="hybrid"),
}
BASELINES = ("dense", "BM25", "plain RRF")
CHOICES = (
    "per-query weights",
    "score fusion 0.5",
    "BM25 plain terms",
    "BM25 as indexed",
    "BM25 + English stems",
    "RRF with English stems",
)
DEFAULT = "Tsumugi hybrid (default)"
DATA = Path("/tmp/tsumugi-retrieval-bench")
"""Where the corpora are written and ingested (kept between runs)."""


def _is_japanese(text: str) -> bool:
    return bool(re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", text))


def _tokens(text: str, japanese: bool) -> list[str]:
    if japanese:
        chars = re.sub(r"\s+", "", text.lower())
        return [chars[i : i + 2] for i in range(len(chars) - 1)]
    return re.findall(r"\w+", text.lower())


def _span_answer(item: dict) -> bool:
    """Whether the item is from a Japanese corpus, whose answers are spans of its paragraph: by
    the question too, since a span can hold no Japanese (JaQuAD's 401.1m, A320), and the English
    test then found no word of it in Japanese text (12 of 500 JaQuAD questions)."""
    return _is_japanese(item.get("q", "")) or _is_japanese(item["a"])


def holds_answer(text: str, item: dict) -> bool:
    """Japanese: the answer string; English: at least half of the answer's words."""
    answer = item["a"]
    if _span_answer(item):
        return re.sub(r"\s+", "", answer) in re.sub(r"\s+", "", text)
    words = set(re.findall(r"\w+", answer.lower()))
    return bool(words) and len(words & set(re.findall(r"\w+", text.lower()))) >= len(words) / 2


def is_hit(doc: str, text: str, item: dict) -> bool:
    return doc == item["doc"] and holds_answer(text, item)


def _first_holds(texts: list[str], item: dict) -> bool | None:
    """For a span answer (Japanese), whether the first passage holds it, from any document:
    the looser hit. None for English, whose half-the-words test is too loose for it."""
    if not _span_answer(item):
        return None
    return bool(texts) and holds_answer(texts[0], item)


def baseline_chunks(folder: Path) -> list[tuple[str, str]]:
    chunks = []
    for path in sorted(folder.iterdir()):
        text = path.read_text(encoding="utf-8")
        chunks += [(path.name, text[i : i + BASELINE_CHARS]) for i in range(0, len(text), BASELINE_CHARS)]
    return chunks


class Okapi:
    """Textbook BM25 (Robertson and Zaragoza's Okapi, k1=1.5, b=0.75)."""

    def __init__(self, docs: list[list[str]], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.tf = [Counter(d) for d in docs]
        self.len = np.array([len(d) for d in docs], dtype=float)
        self.avg = float(self.len.mean()) if len(docs) else 0.0
        df = Counter(t for d in self.tf for t in d)
        n = len(docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def scores(self, query: list[str]) -> np.ndarray:
        out = np.zeros(len(self.tf))
        norm = self.k1 * (1 - self.b + self.b * self.len / max(self.avg, 1e-9))
        for term in set(query):
            idf = self.idf.get(term)
            if idf is None:
                continue
            tf = np.array([c.get(term, 0) for c in self.tf], dtype=float)
            out += idf * tf * (self.k1 + 1) / (tf + norm)
        return out


def rrf(*rankings: list[int], k: int = RRF_K) -> list[int]:
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, i in enumerate(ranking):
            fused[i] = fused.get(i, 0.0) + 1 / (k + rank + 1)
    return sorted(fused, key=lambda i: -fused[i])


def sharpness(scores: list[float], depth: int = 10) -> float:
    """The per-query weight used before: how sharply scores fall to the tenth, 0.05-1."""
    if len(scores) < 2:
        return 1.0
    first, last = scores[0], scores[min(len(scores), depth) - 1]
    return float(min(1.0, max(0.05, (first - last) / (abs(first) + 1e-9))))


def weighted_rrf(dense: list[tuple[int, float]], lexical: list[tuple[int, float]]) -> list[int]:
    fused: dict[int, float] = {}
    for ranking in (dense, lexical):
        weight = sharpness([s for _, s in ranking])
        for rank, (i, _) in enumerate(ranking, start=1):
            fused[i] = fused.get(i, 0.0) + weight / (RRF_K + rank)
    return sorted(fused, key=lambda i: -fused[i])


def score_fusion(dense: list[tuple[int, float]], lexical: list[tuple[int, float]], alpha=0.5) -> list[int]:
    """Min-max normalised scores, ``alpha`` on dense; a side that missed a passage gives it 0."""

    def normalised(ranking):
        if not ranking:
            return {}
        values = [s for _, s in ranking]
        low, high = min(values), max(values)
        return {i: (s - low) / (high - low + 1e-9) for i, s in ranking}

    d, lex = normalised(dense), normalised(lexical)
    fused = {i: alpha * d.get(i, 0.0) + (1 - alpha) * lex.get(i, 0.0) for i in set(d) | set(lex)}
    return sorted(fused, key=lambda i: -fused[i])


_ENGLISH_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


@functools.cache
def _english_stemmer():
    import snowballstemmer

    return snowballstemmer.stemmer("english")


def stemmed(text: str) -> list[str]:
    """What Tsumugi indexes, with English words replaced by their Snowball stems."""
    from knowledge.lexical import index_terms

    stem = _english_stemmer().stemWord
    return [stem(t) if _ENGLISH_WORD.fullmatch(t) else t for t in index_terms(text)]


def scores_of(ranked: list[list[bool]], anywhere: list[bool | None] = ()) -> dict:
    """recall@1, recall@5 and MRR@10 of per-question hit lists (best first); with
    ``anywhere`` (:func:`_first_holds` per question), also the looser recall@1."""
    n = max(1, len(ranked))
    first = [next((r for r, h in enumerate(hits[:DEPTH]) if h), None) for hits in ranked]
    out = {
        "recall@1": sum(f == 0 for f in first) / n,
        "recall@5": sum(f is not None and f < 5 for f in first) / n,
        "mrr@10": sum(1 / (f + 1) for f in first if f is not None) / n,
        "questions": len(ranked),
    }
    loose = [a for a in anywhere if a is not None]
    if loose:
        out["recall@1 any document"] = sum(loose) / len(loose)
    return out


def run_baselines(folder: Path, items: list[dict], embedder) -> dict:
    chunks = baseline_chunks(folder)
    texts = [t for _, t in chunks]
    japanese = _is_japanese(" ".join(i["q"] for i in items[:20]))
    vectors = embedder.encode(texts)
    bm25 = Okapi([_tokens(t, japanese) for t in texts])
    ranked: dict[str, list[list[bool]]] = {name: [] for name in BASELINES}
    anywhere: dict[str, list[bool | None]] = {name: [] for name in BASELINES}
    for item in items:
        query = embedder.encode([item["q"]])[0]
        dense = list(np.argsort(-(vectors @ query))[:100])
        lexical = list(np.argsort(-bm25.scores(_tokens(item["q"], japanese)))[:100])
        for name, order in (("dense", dense), ("BM25", lexical), ("plain RRF", rrf(dense, lexical))):
            ranked[name].append([is_hit(chunks[i][0], chunks[i][1], item) for i in order[:DEPTH]])
            anywhere[name].append(_first_holds([chunks[i][1] for i in order[:1]], item))
    return {name: scores_of(hits, anywhere[name]) for name, hits in ranked.items()}


def run_tsumugi(app, kb: str, items: list[dict], choices: bool = False) -> dict:
    from knowledge.embed import get_embedder
    from knowledge.lexical import index_terms, terms
    from knowledge.retrieve import RetrievalConfig

    out = {}
    for name, options in TSUMUGI_RANKERS.items():
        config = RetrievalConfig(top_k=DEPTH, cutoff=False, **options)
        found = [app.search(kb, item["q"], config) for item in items]
        hits = [[is_hit(h.doc, h.text, item) for h in f] for f, item in zip(found, items)]
        out[name] = scores_of(
            hits, [_first_holds([h.text for h in f], item) for f, item in zip(found, items)]
        )
    store = app.library.get(kb)
    rows = store._db.execute(
        "SELECT c.id, d.name, c.heading, c.text FROM chunks c JOIN documents d ON d.id=c.doc_id"
    )
    chunks = {i: (doc, heading, text) for i, doc, heading, text in rows}
    out["answer in a passage"] = sum(
        any(is_hit(d, t, item) for d, _, t in chunks.values()) for item in items
    ) / max(1, len(items))
    if not choices:
        return out
    ranked: dict[str, list[list[bool]]] = {name: [] for name in CHOICES}
    sides = {}
    for mode in ("dense", "lexical"):
        config = RetrievalConfig(top_k=CANDIDATES, candidates=CANDIDATES, cutoff=False, mode=mode)
        sides[mode] = [
            [
                (h.chunk_id, h.similarity if mode == "dense" else h.bm25)
                for h in app.search(kb, item["q"], config)
            ]
            for item in items
        ]
    ids = list(chunks)
    texts = [f"{chunks[i][1]}\n{chunks[i][2]}" if chunks[i][1] else chunks[i][2] for i in ids]
    okapi = {"BM25 plain terms": (Okapi([terms(t) for t in texts]), terms)}
    okapi["BM25 as indexed"] = (Okapi([index_terms(t) for t in texts]), index_terms)
    okapi["BM25 + English stems"] = (Okapi([stemmed(t) for t in texts]), stemmed)
    reads = get_embedder(store.embed_model).reads
    for n, item in enumerate(items):
        # As in Tsumugi's fusion, an embedder that cannot read the question has no say.
        dense, lexical = sides["dense"][n] if reads(item["q"]) else [], sides["lexical"][n]
        orders = {
            "per-query weights": weighted_rrf(dense, lexical),
            "score fusion 0.5": score_fusion(dense, lexical),
        }
        for name, (bm25, analyse) in okapi.items():
            scores = bm25.scores(analyse(item["q"]))
            # As FTS5 does, only passages holding a term of the question are ranked.
            orders[name] = [ids[i] for i in np.argsort(-scores)[:CANDIDATES] if scores[i] > 0]
        orders["RRF with English stems"] = rrf([i for i, _ in dense], orders["BM25 + English stems"])
        for name, order in orders.items():
            ranked[name].append([is_hit(chunks[i][0], chunks[i][2], item) for i in order[:DEPTH]])
    out.update({name: scores_of(hits) for name, hits in ranked.items()})
    return out


def _fresh(app, kb: str, chunking) -> None:
    """Forget a knowledge base kept from an earlier run whose passages are not cut as asked
    (the default changed since): measuring it would report the old passages as the new."""
    if kb in app.library.names() and app.library.get(kb).chunking != chunking:
        app.library.delete(kb)


def _ingested(app, kb: str, folder: Path, chunking) -> None:
    """``kb`` holding ``folder`` cut as ``chunking``: kept from an earlier run if it was cut
    so, ingested (again) otherwise."""
    _fresh(app, kb, chunking)
    if kb not in app.library.names():
        app.library.create(kb, embed_model=app.settings.embed_model, chunking=chunking)
        deque(app.ingest(kb, [folder]), maxlen=0)


def ingested_corpora(questions: int, data: Path = DATA):
    """Each development corpus, ingested (or kept from an earlier run cut as now): its name, its
    knowledge base, ``questions`` answerable items sampled evenly, and its unanswerable questions."""
    from knowledge.chunk import ChunkConfig

    app = bench_app(data)
    for corpus in CORPORA:
        folder = data / "docs" / corpus
        folder.mkdir(parents=True, exist_ok=True)
        answerable, unanswerable = CORPORA[corpus](folder)
        _ingested(app, corpus, folder, ChunkConfig())
        yield corpus, app.library.get(corpus), _sample(answerable, questions), unanswerable


def report_main(prog: str, report: str, questions: int, run, markdown) -> None:
    """The command line of a bench over the corpora: ``--questions N``, ``run(N)`` scored,
    ``markdown(results, N)`` written to ``bench/results/<report>`` and printed."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--questions", type=int, default=questions, help="questions sampled per corpus")
    args = parser.parse_args()
    text = markdown(run(args.questions), args.questions)
    (RESULTS / report).write_text(text, "utf-8")
    print(text)


def bench_app(data: Path, model_cache: Path | None = None):
    """A Tsumugi keeping its knowledge bases under ``data``, taking a whole corpus in one
    ingest (JaQuAD has 1,431 files; an upload's limit is 500)."""
    from assistant.config import Settings
    from assistant.serving.service import Tsumugi
    from knowledge.limits import IngestLimits

    settings = Settings(
        data_dir=data / "tsumugi",
        model_cache=model_cache or data / "models",
        limits=IngestLimits(max_files=100_000),
    )
    return Tsumugi(settings)


def run(
    corpora: list[str], questions: int, data: Path, model_cache: Path | None, chunk_sizes: list[int] = ()
) -> dict:
    from knowledge.chunk import ChunkConfig
    from knowledge.embed import DEFAULT_EMBED_MODEL, get_embedder

    app = bench_app(data, model_cache)
    embedder = get_embedder(DEFAULT_EMBED_MODEL)
    results = {}
    for corpus in corpora:
        folder = data / "docs" / corpus
        folder.mkdir(parents=True, exist_ok=True)
        answerable, _ = CORPORA[corpus](folder)
        items = _sample(answerable, questions)
        started = time.perf_counter()
        _ingested(app, corpus, folder, ChunkConfig())
        ingest_s = time.perf_counter() - started
        started = time.perf_counter()
        scores = run_baselines(folder, items, embedder)
        scores.update(run_tsumugi(app, corpus, items, choices=True))
        sizes = {}
        default = ChunkConfig()
        variants = {f"{size} tokens": ChunkConfig(size=size, overlap=size // 5) for size in chunk_sizes}
        if chunk_sizes:
            variants["no overlap"] = ChunkConfig(overlap=0)
        for label, chunking in variants.items():  # passage size and overlap, measured
            kb = f"{corpus}-{label.replace(' ', '-')}"
            _ingested(app, kb, folder, chunking)
            sizes[label] = run_tsumugi(app, kb, items)
        sizes = {f"{default.size} tokens (default)": scores, **sizes}
        results[corpus] = {
            "scores": scores,
            "chunk_sizes": sizes,
            "ingest_s": ingest_s,
            "rank_s": time.perf_counter() - started,
        }
        print(json.dumps({corpus: scores, "sizes": sizes}, ensure_ascii=False), flush=True)
    return results


def _cell(score: dict) -> str:
    return f"{score['recall@1']:.2f} / {score['recall@5']:.2f} / {score['mrr@10']:.2f}"


def markdown(results: dict, meta: dict) -> str:
    rankers = [*BASELINES, *TSUMUGI_RANKERS]
    lines = [
        "# Retrieval quality",
        "",
        f"`{meta['command']}` · {meta['date']} · CPU flags: {meta['cpu_flags']}",
        "",
        "Each cell: recall@1 / recall@5 / MRR@10. Baselines over 800-character chunks; Tsumugi over "
        "its own passages, without the relevance cut-off. Last column: Tsumugi's recall@1 less the "
        "best baseline's.",
        "",
        "| corpus (questions) | " + " | ".join(rankers) + " | margin |",
        "|---|" + "---|" * (len(rankers) + 1),
    ]
    for corpus, r in results.items():
        s = r["scores"]
        n = s[DEFAULT]["questions"]
        margin = s[DEFAULT]["recall@1"] - max(s[k]["recall@1"] for k in BASELINES)
        lines.append(
            f"| {corpus} ({n}) | " + " | ".join(_cell(s[k]) for k in rankers) + f" | {margin:+.2f} |"
        )
    loose = {c: r["scores"] for c, r in results.items() if "recall@1 any document" in r["scores"][DEFAULT]}
    for corpus, s in loose.items():
        cells = ", ".join(f"{k} {s[k]['recall@1 any document']:.2f}" for k in rankers)
        lines += [
            "",
            f"{corpus}, counting a first passage from any document that holds the answer string (the "
            f"strict hit wants the question's own paragraph; another may hold the same fact): {cells}.",
        ]
    lines += [
        "",
        "The choices behind the default, on Tsumugi's passages: fusing its own dense and lexical "
        "candidates by the per-query weights used before and by min-max score fusion (0.5 each); "
        "BM25 (Okapi) on plain terms (words; Japanese bigrams) against what Tsumugi indexes "
        "(Japanese also cross-script bigrams and SudachiPy words), and English words stemmed "
        "(Snowball), alone and fused with Tsumugi's dense side by plain RRF (measured, not adopted).",
        "",
        "| corpus | " + " | ".join([DEFAULT, *CHOICES]) + " |",
        "|---|" + "---|" * (len(CHOICES) + 1),
    ]
    for corpus, r in results.items():
        s = r["scores"]
        lines.append(
            f"| {corpus} | " + " | ".join(_cell(s[k]) if k in s else "–" for k in [DEFAULT, *CHOICES]) + " |"
        )
    labels = list(dict.fromkeys(label for r in results.values() for label in r.get("chunk_sizes", {})))
    if len(labels) > 1:
        lines += [
            "",
            "Passages (overlap a fifth of the size unless stated): Tsumugi's lexical and default hybrid "
            "recall@1, and the share of questions whose answer lies whole in some passage.",
            "",
            "| corpus | " + " | ".join(labels) + " |",
            "|---|" + "---|" * len(labels),
        ]
        for corpus, r in results.items():
            runs = [r["chunk_sizes"].get(label, {}) for label in labels]
            cells = [
                f"{x['Tsumugi lexical']['recall@1']:.2f} / {x[DEFAULT]['recall@1']:.2f} / {x['answer in a passage']:.2f}"
                if x
                else "–"
                for x in runs
            ]
            lines.append(f"| {corpus} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(
    corpora: list[str], questions: int, data: Path, model_cache: Path | None, chunk_sizes: list[int]
) -> str:
    """Run, write ``bench/results/retrieval_quality.md`` (and the JSON beside it), return the table."""
    results = run(corpora, questions, data, model_cache, chunk_sizes)
    meta = {
        "command": "python -m bench.retrieval_quality "
        + f"--questions {questions}"
        + (" --chunk-sizes " + " ".join(map(str, chunk_sizes)) if chunk_sizes else ""),
        "date": time.strftime("%Y-%m-%d"),
        "cpu_flags": cpu_flags(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "retrieval_quality.md").write_text(markdown(results, meta), encoding="utf-8")
    (RESULTS / "retrieval_quality.json").write_text(
        json.dumps({"meta": meta, "results": results}, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    return markdown(results, meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    parser.add_argument("--questions", type=int, default=500, help="per corpus, sampled evenly (0: all)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--model-cache", type=Path)
    parser.add_argument(
        "--chunk-sizes", type=int, nargs="*", default=[], help="also measure these passage sizes"
    )
    args = parser.parse_args()
    print(report(args.corpora, args.questions, args.data, args.model_cache, args.chunk_sizes))


if __name__ == "__main__":
    main()
