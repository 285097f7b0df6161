"""Hybrid retrieval: dense (FAISS) and BM25 (FTS5) rankings fused by reciprocal rank.

Reciprocal rank fusion (Cormack et al., 2009; k=60) needs no calibration between the rankers'
scores, which live on different scales (cosine similarity, BM25), and it is the one rule that
held on every corpus measured: per-query weights from the sharpness of each ranking's scores,
and min-max score fusion at one weight, each won on one corpus and lost on another
(``bench/results/retrieval_quality.md``). One exception is not a weight but a fact: an
embedder that does not read the question's language (Japanese with the English-only default)
ranks by noise, and its ranking is left out.

An optional cross-encoder (``rerank_model``: a local folder or a cached hub id) then reorders
the first ``rerank_depth`` fused candidates by reading question and passage together.

The relevance cut-off keeps a passage when the embedder finds it similar enough to the
question, or when it contains a large enough share of the question's informative terms
(IDF-weighted coverage; a term the documents never use weighs most). A question about
something the documents never mention fails both, so the answer can say so instead of
inventing one. For a question in a language the embedder does not read, similarity is noise
and coverage alone decides, at a lower bar because bigram terms rarely all match. With the
cut-off off (``search`` without ``--cutoff``), the passages that pass still come first and
the rest follow them: a ranking shows the order answering reads the passages in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from knowledge.chunk import indexed_text
from knowledge.embed import get_embedder
from knowledge.errors import ConfigError
from knowledge.lexical import distinctive_terms, idf
from knowledge.query import Query
from knowledge.store import KnowledgeBase
from knowledge.text import points_back


@dataclass(frozen=True)
class RetrievalConfig:
    top_k: int = 5
    """Passages returned."""
    candidates: int = 50
    """Passages each ranker contributes to the fusion."""
    mode: Literal["hybrid", "dense", "lexical"] = "hybrid"
    """Which rankings to use; hybrid fuses both."""
    rrf_k: int = 60
    """Reciprocal rank fusion constant: larger flattens the difference between ranks."""
    rerank_model: str | None = None
    """A sentence-transformers cross-encoder (folder or cached hub id) that reorders the first
    candidates; None: no reranking."""
    rerank_depth: int = 20
    """Fused candidates the cross-encoder reads."""
    min_similarity: float = 0.3
    """Cosine similarity at or above which a passage counts as relevant."""
    min_coverage: float = 0.5
    """Share of the question's IDF-weighted terms that makes a passage relevant on its own."""
    min_coverage_unread: float = 0.3
    """The same, for questions in a language the embedder does not read. Bigrams rarely all
    match, so the bar is lower; passages of a whole paragraph match more bigrams by chance than
    the quarter-size ones before, so it rose from 0.2 (ja-support: answerable questions kept
    1.00 at both, unanswerable ones 0.22 against 0.39; JaQuAD dev answerable kept 0.99)."""
    cutoff: bool = True
    """Drop passages that pass neither relevance test."""

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.top_k <= 100:
            problems.append(f"`top_k` should be between 1 and 100, got {self.top_k}.")
        if self.candidates < self.top_k:
            problems.append(f"`candidates` should be at least `top_k` ({self.top_k}), got {self.candidates}.")
        if self.mode not in ("hybrid", "dense", "lexical"):
            problems.append(f"`mode` should be hybrid, dense or lexical, got {self.mode!r}.")
        if self.rrf_k < 1:
            problems.append(f"`rrf_k` should be positive, got {self.rrf_k}.")
        if not 1 <= self.rerank_depth <= 200:
            problems.append(f"`rerank_depth` should be between 1 and 200, got {self.rerank_depth}.")
        if not -1 <= self.min_similarity <= 1:
            problems.append(f"`min_similarity` should be between -1 and 1, got {self.min_similarity}.")
        for name in ("min_coverage", "min_coverage_unread"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                problems.append(f"`{name}` should be between 0 and 1, got {value}.")
        if problems:
            raise ConfigError(" ".join(problems))


@dataclass
class Hit:
    chunk_id: int
    doc: str
    page: int | None
    heading: str
    text: str
    score: float
    """Fused score scaled to 0-1 (1: first in every ranking used)."""
    similarity: float | None = None
    bm25: float | None = None
    coverage: float = 0.0
    rerank: float | None = None
    """The cross-encoder's score, when one reordered the candidates."""
    relevant: bool = True
    """Whether the passage passed the relevance cut-off (with the cut-off off, those that did
    not follow those that did)."""
    ranks: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "text": self.text,
            "doc": self.doc,
            "page": self.page,
            "heading": self.heading or None,
            "score": round(self.score, 6),
            "similarity": None if self.similarity is None else round(self.similarity, 4),
            "bm25": None if self.bm25 is None else round(self.bm25, 4),
            "coverage": round(self.coverage, 4),
            "rerank": None if self.rerank is None else round(self.rerank, 4),
            "relevant": self.relevant,
        }


def _coverage(
    kb: KnowledgeBase, query_terms: list[str], ids: list[int], stats: tuple[int, dict[str, int]]
) -> dict[int, float]:
    unique = distinctive_terms(list(dict.fromkeys(query_terms)))
    if not unique or not ids:
        return {i: 0.0 for i in ids}
    n, df = max(1, stats[0]), stats[1]
    # A term the corpus never contains gets the highest weight: missing it matters most.
    weights = {t: idf(n, df.get(t, 0)) for t in unique}
    total = sum(weights.values()) or 1.0
    chunk_terms = kb.chunk_terms(ids)
    return {i: sum(weights[t] for t in unique if t in chunk_terms.get(i, ())) / total for i in ids}


def _rerank(kb: KnowledgeBase, question: str, ordered: list[int], config: RetrievalConfig):
    """``ordered`` with its first ``rerank_depth`` reordered by the cross-encoder, and its scores."""
    from knowledge.rerank import get_reranker

    head = ordered[: config.rerank_depth]
    stored = kb.chunks_by_id(head)
    head = [i for i in head if i in stored]
    texts = [indexed_text(stored[i].heading, stored[i].text) for i in head]
    scores = get_reranker(config.rerank_model).scores(question, texts)
    by_score = dict(zip(head, scores))
    head = sorted(head, key=lambda i: -by_score[i])
    return head + [i for i in ordered[config.rerank_depth :] if i not in by_score], by_score


def _similarities(kb: KnowledgeBase, ids: list[int], query_vectors: list) -> dict[int, np.ndarray]:
    """Each passage's similarity to each query vector, from its vector in SQLite (an
    approximate index cannot give them back)."""
    if not query_vectors or not ids:
        return {}
    found, vectors = kb.vectors_of(ids)
    if not len(found):
        return {}
    return dict(zip(found.tolist(), vectors @ np.vstack(query_vectors).T))


def retrieve(
    kb: KnowledgeBase,
    query: str | Query,
    config: RetrievalConfig | None = None,
    context: list[str] | None = None,
) -> list[Hit]:
    """The passages of ``kb`` most relevant to ``query``, best first.

    ``context`` holds earlier user turns of a conversation. A question that points back
    ("and how much does it weigh?") or names nothing of its own ("What should I do?") is
    searched together with the previous question: alone, "it" finds any product, and a
    question without a term finds nothing. Any other question is searched alone as well, and
    the rankings fused: a change of topic names its own subject, which the previous question
    outvoted (contoso's FAQ questions after another product's question: recall@1 0.40, alone
    0.94).
    The conversation ranks and admits passages for such a question only when some passage is
    relevant to the question alone: it made any question look covered ("What is the capital
    of Australia?" after one on a tent was answered from the tent's manual).
    """
    config = config or RetrievalConfig()
    query = Query.of(query)
    searched = [query]
    if context:
        with_context = Query.of(f"{context[-1]} {query.text}")
        # One that names nothing of its own ("What should I do?", どうすればいいですか？) asks
        # about what was said before, as one that points back does.
        leans = points_back(query.text) or not query.content_terms
        searched = [with_context] if leans else [query, with_context]
    queries = [query, *(q for q in searched if q is not query)]
    rankings: list[tuple[str, list[tuple[int, float]]]] = []
    # Chunk count and document frequencies serve both BM25 pruning and the coverage test.
    stats = kb.term_stats(list(dict.fromkeys(t for q in queries for t in q.terms)))
    embedder = None
    dense_vectors = []
    for q in searched:
        if config.mode in ("hybrid", "dense"):
            embedder = embedder or get_embedder(kb.embed_model)
            vector = embedder.encode([q.text])[0]
            dense_vectors.append(vector)
            rankings.append(("dense", kb.dense_search(vector, config.candidates)))
        if config.mode in ("hybrid", "lexical"):
            rankings.append(("bm25", kb.lexical_search(list(q.terms), config.candidates, stats)))

    fused: dict[int, float] = {}
    best: dict[int, dict[str, float]] = {}
    ranks: dict[int, dict[str, int]] = {}
    # An embedder that does not read the question's language ranks by noise (the English
    # MiniLM on Japanese: recall@1 0.07 on JaQuAD dev, bench/results/retrieval_quality.md):
    # in a hybrid search its ranking gets no weight at all, not just a smaller one.
    reads = embedder is None or embedder.reads(query.text)
    used = [
        (kind, r) for kind, r in rankings if not (kind == "dense" and config.mode == "hybrid" and not reads)
    ]
    for kind, ranking in used:
        for rank, (chunk_id, score) in enumerate(ranking, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (config.rrf_k + rank)
            slot = best.setdefault(chunk_id, {})
            slot[kind] = max(slot.get(kind, -math.inf), score)
            ranks.setdefault(chunk_id, {}).setdefault(kind, rank)
    if not fused:
        return []
    ordered = sorted(fused, key=lambda i: -fused[i])[: max(config.candidates, config.top_k)]
    reranked: dict[int, float] = {}
    if config.rerank_model:
        # What was searched first: the question joined to what it points back to, or itself.
        ordered, reranked = _rerank(kb, searched[0].text, ordered, config)

    # Relevance tests on the candidates: similarity (also for those only BM25 found) and coverage.
    similarity: dict[int, float] = {}
    if len(dense_vectors) == 1:  # one query: the dense search's own score
        similarity = {i: best[i]["dense"] for i in ordered if "dense" in best[i]}
    each = _similarities(kb, [i for i in ordered if i not in similarity], dense_vectors)
    similarity.update((i, scores.max()) for i, scores in each.items())
    similarity = {i: float(similarity.get(i, 0.0)) for i in ordered} if dense_vectors else {}
    # A follow-up counts as covered when the question alone or with its context is.
    coverage = {i: 0.0 for i in ordered}
    own_coverage = {}
    for q in queries:
        for chunk_id, value in _coverage(kb, list(q.content_terms), ordered, stats).items():
            coverage[chunk_id] = max(coverage[chunk_id], value)
            if q is query:
                own_coverage[chunk_id] = value

    if len(searched) > 1 and not reranked:
        # A tie (two passages whose ranks the question and its conversation swap) goes to the
        # passage covering more of the question, then to the one the previous turn is about;
        # otherwise the question alone's order stands. 'お手入れはどうすればよいですか？' after
        # 'KAMADO-5を使っています。' covers the air purifier's care passage as fully as the rice
        # cooker's, and the tie went to the air purifier, answered at confidence 0.60. Broken
        # by the conversation's own ranking instead, a previous turn about neither passage
        # decided by chance (ja-support, every question after every other: 0.975 right).
        before = _coverage(kb, list(Query.of(context[-1]).content_terms), ordered, stats)
        ordered.sort(key=lambda i: (-fused[i], -own_coverage[i], -before[i]))

    dense_trusted = embedder is not None and reads
    min_similarity = config.min_similarity if dense_trusted else math.inf
    min_coverage = config.min_coverage
    if not dense_trusted and query.japanese:
        min_coverage = config.min_coverage_unread
    relevant = {i: similarity.get(i, -1.0) >= min_similarity or coverage[i] >= min_coverage for i in ordered}
    if len(searched) > 1:  # a question that names its own subject, in a conversation
        # Its own vector is the first searched; with two, every candidate's came from SQLite.
        own_similarity = {i: scores[0] for i, scores in each.items()}
        if not any(
            own_similarity.get(i, -1.0) >= min_similarity or own_coverage.get(i, 0.0) >= min_coverage
            for i in ordered
        ):
            relevant = dict.fromkeys(ordered, False)
    # What passes the relevance test comes first, in fused order: it is what an answer reads.
    # Without the cut-off, the rest follows, so the ranking a search shows is the order
    # answering uses (before, a passage judged irrelevant could rank above the relevant one
    # the answer was built from).
    kept = [i for i in ordered if relevant[i]]
    if not config.cutoff:
        kept += [i for i in ordered if not relevant[i]]
    kept = kept[: config.top_k]
    stored = kb.chunks_by_id(kept)
    scale = len(used) / (config.rrf_k + 1)
    return [
        Hit(
            chunk_id=i,
            doc=stored[i].doc,
            page=stored[i].page,
            heading=stored[i].heading,
            text=stored[i].text,
            score=fused[i] / scale,
            similarity=similarity.get(i),
            bm25=best[i].get("bm25"),
            coverage=coverage[i],
            rerank=reranked.get(i),
            relevant=relevant[i],
            ranks=ranks[i],
        )
        for i in kept
        if i in stored
    ]
