"""How far to trust an answer: one score in 0-1 that predicts whether the answer is right.

The signals describe the evidence the answer stands on (:mod:`assistant.answering.evidence`) and what
the support check did to the model's sentences. They are combined by a logistic model fitted
on *correct versus wrong* answers to answerable questions (correct: the answer holds at least
half of the expected answer's words), with each corpus scored by weights fitted on the other
corpora (``python -m bench --only answers`` reports that leave-one-corpus-out ROC AUC).

One fact is not weighed but bounds the score: an answer that gives no number to a question
asking for one (:mod:`assistant.answering.asks`) does not answer it, however well its words
match (:data:`NO_NUMBER`).

Weights belong to a model: a ``confidence.json`` beside a tuned adapter, or
``tsumugi-confidence.json`` in a model folder, is used for that model. The weights shipped in
``assistant/confidence.json`` were fitted with the embedded 135M model; for another model
without its own file, only the quote style's weights apply (they do not involve the model:
the quote style's answer is the evidence itself), and the signals say so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from assistant.answering.asks import gives_number

FEATURES = (
    "evidence",
    "coverage",
    "similarity",
    "passage_similarity",
    "passage_coverage",
    "supported",
    "read",
)
"""The signals, in the order of the weights."""

SHIPPED = Path(__file__).with_name("confidence.json")
"""Weights fitted with the embedded chat model, per answer style."""

DEFAULT_THRESHOLD = 0.5
"""Answers scoring below this are escalated (or marked "needs review")."""

NO_NUMBER = 0.25
"""The most confidence an answer gets that gives no number to a question asking for one: under
the default threshold, so it is escalated or marked for review. On the four development
corpora (200 questions each, quote style) 9 answers did so, 7 of them counted wrong and none
stating the number asked for, at confidence 0.47-0.82 (「白米が炊けるまで何分かかりますか？」
high). With the sentence beside the evidence that gives the number
(:func:`~assistant.answering.evidence.select`), 4 still do."""


@dataclass(frozen=True)
class Signals:
    evidence: float
    """Score of the best evidence sentence (term coverage, and similarity where measured)."""
    coverage: float
    """IDF-weighted share of the question's informative terms found in the answer shown."""
    similarity: float
    """Best embedding similarity of an evidence sentence to the question (0 when not measured)."""
    passage_similarity: float
    """Best embedding similarity of a retrieved passage to the question (0 when not measured)."""
    passage_coverage: float
    """Best share of the question's IDF-weighted terms (IDF in the whole knowledge base) in one
    passage: unlike the evidence scores, which compare the retrieved sentences with each other,
    this says whether the documents hold the question's words at all."""
    supported: float
    """Share of the model's sentences the support check kept (1 when it wrote none)."""
    read: float
    """1 when the embedder reads the question's language (so similarity means something)."""
    number_given: float = 1.0
    """0 when the question asks for a number and the answer gives none (not weighed: it bounds
    the score, :func:`capped`)."""

    def vector(self) -> list[float]:
        return [getattr(self, name) for name in FEATURES]

    def to_json(self) -> dict:
        return {name: round(getattr(self, name), 4) for name in (*FEATURES, "number_given")}


@dataclass(frozen=True)
class Weights:
    weights: tuple[float, ...]
    bias: float
    source: str
    """Where the weights come from (a file, or "quote weights" for an unfitted model)."""


def signals(evidence, answer, coverage: float, hits, asked: str = "") -> Signals:
    """The signals for an answer built on ``evidence`` (``answer.check`` from the support check);
    ``coverage`` is the question's weighted term coverage by the answer's text, and ``asked``
    what the question asks (the question, or a customer's message without its pleasantries)."""
    check = getattr(answer, "check", {}) or {}
    written = check.get("written", 0)
    return Signals(
        evidence=evidence.best_score,
        coverage=coverage,
        similarity=evidence.best_similarity,
        passage_similarity=max((h.similarity for h in hits if h.similarity is not None), default=0.0)
        if evidence.read
        else 0.0,
        passage_coverage=max((h.coverage for h in hits), default=0.0),
        supported=check.get("kept", 0) / written if written else 1.0,
        read=float(evidence.read),
        number_given=float(gives_number(answer.text, asked)),
    )


@lru_cache(maxsize=32)
def _load(path: str) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _pick(path: Path, style: str, source: str) -> Weights | None:
    if not path.is_file():
        return None
    styles = _load(str(path)).get("styles", {})
    entry = styles.get(style) or styles.get("quote")
    if not entry or list(entry.get("features", [])) != list(FEATURES):
        return None
    return Weights(tuple(entry["weights"]), float(entry["bias"]), source)


def weights_for(model, style: str) -> Weights:
    """The weights for answers of ``style`` by ``model`` (see the module docstring)."""
    config = getattr(model, "config", None)
    adapter = getattr(config, "adapter", "") or ""
    name = getattr(config, "name", "") or getattr(config, "model", "") or ""  # a remote model: its name there
    if adapter:
        found = _pick(Path(adapter) / "confidence.json", style, f"adapter {Path(adapter).name}")
        if found:
            return found
    if name and Path(name).is_dir():
        found = _pick(Path(name) / "tsumugi-confidence.json", style, f"model folder {Path(name).name}")
        if found:
            return found
    shipped = _load(str(SHIPPED))
    if style == "quote" or not name or name == shipped.get("model") or not config:
        return _pick(SHIPPED, style, "shipped") or _pick(SHIPPED, "quote", "shipped")
    # Another model without weights of its own: only the evidence-only weights are honest.
    return _pick(SHIPPED, "quote", f"quote weights (none fitted for {name})")


def score(s: Signals, weights: Weights | None = None) -> float:
    """The confidence, 0-1."""
    weights = weights or _pick(SHIPPED, "quote", "shipped")
    z = weights.bias + sum(w * x for w, x in zip(weights.weights, s.vector(), strict=True))
    return capped(1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z)))), s.number_given)


def capped(confidence: float, number_given: float) -> float:
    """``confidence`` bounded by what the answer's form allows (see :data:`NO_NUMBER`)."""
    return confidence if number_given else min(confidence, NO_NUMBER)


def label(confidence: float | None, threshold: float = DEFAULT_THRESHOLD) -> str:
    """A word for the UI: high, medium or low (below the escalation threshold)."""
    if confidence is None:
        return "unknown"
    if confidence < threshold:
        return "low"
    return "high" if confidence >= (1 + threshold) / 2 else "medium"
