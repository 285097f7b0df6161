"""How far to trust an answer: one score in 0-1 from the model's token probabilities and
the retrieval scores.

Each signal alone separates answerable from unanswerable questions only partly: a small
model writes a fluent (high-probability) answer to a question the documents do not cover,
and retrieval finds passages with a product's name in them for a question about a fact the
documents never state. Combined in a logistic model they separate better
(``python -m bench.confidence`` reports ROC AUC for each signal alone, for the combination,
and for a refit that scores each corpus with weights fitted on the other two).

The weights are plain numbers, so the score is the same everywhere: UI, CLI, API and
evaluation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from assistant.metrics import is_abstention, roc_auc  # noqa: F401 - roc_auc is part of this module's API

FEATURES = ("token_logprob", "similarity", "coverage", "cited", "abstained")
"""The signals, in the order of :data:`WEIGHTS`."""

WEIGHTS = (-0.47, 1.1, 2.35, 0.29, -0.32)
BIAS = -1.59
"""Fitted by ``python -m bench.confidence --fit`` (logistic regression, C=0.3) on 133 answerable
and 74 unanswerable questions over three corpora (contoso manuals, English IT support pages,
Japanese shop FAQs). The token log-probability weighs *against* confidence: the embedded 135M
model writes its inventions more fluently than its grounded answers (ROC AUC of token
probability alone: 0.35), so a fluent answer with weak retrieval is the riskiest kind. The
fitted weight says exactly that; refit for another chat model."""

DEFAULT_THRESHOLD = 0.5
"""Answers scoring below this are escalated (or marked "needs review")."""


@dataclass(frozen=True)
class Signals:
    token_logprob: float
    """Mean log-probability of the generated tokens (0 is certain)."""
    similarity: float
    """Best cosine similarity between the question and a passage (0 when not measured)."""
    coverage: float
    """Best share of the question's informative terms found in one passage."""
    cited: float
    """Share of the answer's sentences that carry a citation mark (after the marks are checked)."""
    abstained: float
    """1 when the answer says the documents do not cover the question."""

    def vector(self) -> list[float]:
        return [getattr(self, name) for name in FEATURES]

    def to_json(self) -> dict:
        return {name: round(getattr(self, name), 4) for name in FEATURES}


def cited_share(text: str) -> float:
    """Share of the sentences of ``text`` with a [n] mark."""
    sentences = [s for s in re.split(r"(?<=[.!?。！？])\s+|(?<=[。！？])|\n+", text) if len(s.strip()) > 3]
    if not sentences:
        return 0.0
    return sum(bool(re.search(r"\[\d{1,2}\]", s)) for s in sentences) / len(sentences)


def signals(
    answer_text: str, passages, token_logprobs: list[float], final_text: str | None = None
) -> Signals:
    """The signals for an answer generated from ``passages`` (``Hit`` objects); ``final_text``
    is the answer after its citations were checked (default: ``answer_text``)."""

    logprobs = token_logprobs or [0.0]
    similarities = [p.similarity for p in passages if p.similarity is not None]
    return Signals(
        token_logprob=sum(logprobs) / len(logprobs),
        similarity=max(similarities, default=0.0),
        coverage=max((p.coverage for p in passages), default=0.0),
        cited=cited_share(answer_text if final_text is None else final_text),
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
