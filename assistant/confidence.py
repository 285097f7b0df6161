"""How far to trust an answer: one score in 0-1 from the model's token probabilities and
the retrieval scores.

Each signal alone separates answerable from unanswerable questions only partly: a small
model writes a fluent (high-probability) answer to a question the documents do not cover,
and retrieval finds passages with a product's name in them for a question about a fact the
documents never state. Combined in a logistic model they separate much better
(``python -m bench --only confidence`` reports ROC AUC for each signal alone and for the
combination, cross-validated on the development corpus).

The weights below were fitted by ``bench/confidence.py --fit`` on the contoso manuals
(89 answerable FAQ questions, 40 unanswerable ones, embedded model, top-5). They are plain
numbers, so the score is the same everywhere: UI, CLI, API and evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from assistant.metrics import is_abstention
from knowledge.lexical import content_terms

FEATURES = ("token_logprob", "token_low", "similarity", "coverage", "support", "abstained")
"""The signals, in the order of :data:`WEIGHTS`."""

WEIGHTS = (1.2, 0.6, 5.0, 2.5, 2.5, -4.0)
BIAS = -5.0
"""Fitted by ``python -m bench.confidence --fit``; see the module docstring."""

DEFAULT_THRESHOLD = 0.5
"""Answers scoring below this are escalated (or marked "needs review")."""


@dataclass(frozen=True)
class Signals:
    token_logprob: float
    """Mean log-probability of the generated tokens (0 is certain)."""
    token_low: float
    """Mean log-probability of the least likely fifth of the tokens."""
    similarity: float
    """Best cosine similarity between the question and a passage (0 when not measured)."""
    coverage: float
    """Best share of the question's informative terms found in one passage."""
    support: float
    """Share of the answer's informative terms found in the passages."""
    abstained: float
    """1 when the answer says the documents do not cover the question."""

    def vector(self) -> list[float]:
        return [getattr(self, name) for name in FEATURES]

    def to_json(self) -> dict:
        return {name: round(getattr(self, name), 4) for name in FEATURES}


def signals(answer_text: str, passages, token_logprobs: list[float]) -> Signals:
    """The signals for an answer generated from ``passages`` (``Hit`` objects)."""
    from assistant.answer import strip_citations

    logprobs = sorted(token_logprobs) or [0.0]
    low = logprobs[: max(1, len(logprobs) // 5)]
    similarities = [p.similarity for p in passages if p.similarity is not None]
    answer_terms = set(content_terms(strip_citations(answer_text)))
    passage_terms: set[str] = set()
    for p in passages:
        passage_terms.update(content_terms(p.text))
    return Signals(
        token_logprob=sum(logprobs) / len(logprobs),
        token_low=sum(low) / len(low),
        similarity=max(similarities, default=0.0),
        coverage=max((p.coverage for p in passages), default=0.0),
        support=len(answer_terms & passage_terms) / len(answer_terms) if answer_terms else 0.0,
        abstained=float(is_abstention(answer_text)),
    )


def score(s: Signals, weights=WEIGHTS, bias: float = BIAS) -> float:
    """The confidence, 0-1."""
    z = bias + sum(w * x for w, x in zip(weights, s.vector(), strict=True))
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


def label(confidence: float | None, threshold: float = DEFAULT_THRESHOLD) -> str:
    """A word for the UI: high, medium or low (below the escalation threshold)."""
    if confidence is None:
        return "unknown"
    if confidence < threshold:
        return "low"
    return "high" if confidence >= (1 + threshold) / 2 else "medium"


def roc_auc(positives: list[float], negatives: list[float]) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half)."""
    if not positives or not negatives:
        return None
    wins = 0.0
    for p in positives:
        for n in negatives:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(positives) * len(negatives))
