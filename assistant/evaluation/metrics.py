"""Answer-quality metrics, each a small pure function (hand-checked in tests/test_metrics.py).

Tokens for F1 and exact match are SQuAD-style for Latin script (lower case, no punctuation,
no articles) and single characters for Japanese, as Japanese QA benchmarks (JSQuAD) do.
"""

from __future__ import annotations

import re
import statistics
import unicodedata
from collections import Counter

from assistant.answering.prompt import is_abstention
from knowledge.text import CITATION

METRIC_HELP = {
    "retrieval_recall": "Share of questions where a passage given to the model comes from the expected "
    "document or contains the expected answer.",
    "mrr": "How high the first such passage ranks, on average (1 = always first, 0.5 = second, 0 = never found).",
    "f1": "Word overlap between the answer and the expected answer (1 = same words, 0 = none in common).",
    "exact_match": "Share of answers that are exactly the expected answer, ignoring case and punctuation.",
    "citation_precision": "Share of the passages an answer cites that really hold the answer.",
    "abstention_accuracy": "Share of questions the documents cannot answer where the assistant said so "
    "instead of making something up.",
    "false_abstention": "Share of answerable questions where the assistant wrongly said the documents do not cover it.",
    "confidence_auc": "How well the confidence score ranks answerable questions above unanswerable ones "
    "(1 = always, 0.5 = no better than chance).",
    "confidence_auc_correct": "How well the confidence score ranks right answers above wrong ones "
    "(right: the answer holds at least half of the expected answer's words).",
    "escalated_share": "Share of questions whose answer went to the larger model because confidence was low.",
    "needs_review_share": "Share of answers marked for a person to check (low confidence, and no larger model "
    "or its answer low too).",
    "latency_p50_s": "Typical seconds to a full answer (median).",
    "latency_p95_s": "Seconds to a full answer for the slowest one in twenty.",
}
"""One plain sentence per metric, shown beside it in the UI and the CLI."""

METRIC_LABEL = {
    "retrieval_recall": "Retrieval recall@k",
    "mrr": "Retrieval MRR",
    "f1": "Answer token F1",
    "exact_match": "Exact match",
    "citation_precision": "Citation precision",
    "abstention_accuracy": "Abstention accuracy",
    "false_abstention": "False abstention",
    "confidence_auc": "Confidence ROC AUC",
    "confidence_auc_correct": "Confidence AUC, right vs wrong",
    "escalated_share": "Escalated",
    "needs_review_share": "Needs review",
    "latency_p50_s": "Latency p50 (s)",
    "latency_p95_s": "Latency p95 (s)",
}

_CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff々〆ー]")
_LATIN = re.compile(r"[^\W_]+")
_ARTICLES = {"a", "an", "the"}


def answer_tokens(text: str) -> list[str]:
    """Words (Latin script) and single characters (Japanese) of ``text``, citations removed."""
    text = unicodedata.normalize("NFKC", CITATION.sub(" ", text or "")).lower()
    out: list[str] = []
    for word in _LATIN.findall(text):
        if _CJK_CHAR.search(word):
            out.extend(c for c in word if c.isalnum())
        elif word not in _ARTICLES:
            out.append(word)
    return out


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> bool:
    return answer_tokens(prediction) == answer_tokens(reference)


def answer_recall(passage: str, reference: str) -> float:
    """Share of the expected answer's tokens found in ``passage``."""
    ref = answer_tokens(reference)
    if not ref:
        return 0.0
    have = Counter(answer_tokens(passage))
    return sum((Counter(ref) & have).values()) / len(ref)


CORRECT_RECALL = 0.5
"""An answer is counted right when it holds at least this share of the expected answer's tokens."""


def is_correct(answer: str, expected: str) -> bool:
    """Whether ``answer`` holds the expected answer (for confidence: right versus wrong)."""
    return answer_recall(CITATION.sub(" ", answer), expected) >= CORRECT_RECALL and not is_abstention(answer)


def holds_answer(doc: str, text: str, source: str = "", expected: str = "", min_recall: float = 0.6) -> bool:
    """Whether a passage is evidence for an item: from its source document, or containing its answer."""
    if source:
        # "manual.pdf" and "manual" both name the document manual.pdf.
        doc, source = doc.strip().lower(), source.strip().lower()
        return doc == source or doc.rsplit(".", 1)[0] == source
    return bool(expected) and answer_recall(text, expected) >= min_recall


def first_hit_rank(passages: list[tuple[str, str]], source: str = "", expected: str = "") -> int | None:
    """1-based rank of the first (doc, text) passage holding the answer, or None."""
    for rank, (doc, text) in enumerate(passages, start=1):
        if holds_answer(doc, text, source, expected):
            return rank
    return None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = (len(ordered) - 1) * q
    low = int(index)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


def summarize(results: list[dict]) -> dict:
    """Aggregate per-question results (see ``score_item``) into the reported metrics.

    A metric that does not apply (no unanswerable questions, no retrieval) is None.
    """
    answerable = [r for r in results if not r["unanswerable"]]
    unanswerable = [r for r in results if r["unanswerable"]]
    retrieval = [r for r in answerable if r.get("hit_rank", "n/a") != "n/a"]
    with_expected = [r for r in answerable if r["expected"]]
    cited = [r for r in answerable if r.get("citation_precision") is not None]
    latencies = [r["latency_s"] for r in results if r.get("latency_s") is not None]
    return {
        "questions": len(results),
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "retrieval_recall": _mean([float(r["hit_rank"] is not None) for r in retrieval]),
        "mrr": _mean([1 / r["hit_rank"] if r["hit_rank"] else 0.0 for r in retrieval]),
        "f1": _mean([r["f1"] for r in with_expected]),
        "exact_match": _mean([float(r["exact_match"]) for r in with_expected]),
        "citation_precision": _mean([r["citation_precision"] for r in cited]),
        "abstention_accuracy": _mean([float(r["abstained"]) for r in unanswerable]),
        "false_abstention": _mean([float(r["abstained"]) for r in answerable]),
        "confidence_auc": roc_auc(
            [r["confidence"] for r in answerable if r.get("confidence") is not None],
            [r["confidence"] for r in unanswerable if r.get("confidence") is not None],
        ),
        "confidence_auc_correct": roc_auc(
            [r["confidence"] for r in with_expected if r.get("confidence") is not None and r["correct"]],
            [r["confidence"] for r in with_expected if r.get("confidence") is not None and not r["correct"]],
        ),
        "escalated_share": _mean([float(r["escalated"]) for r in results if "escalated" in r]),
        "needs_review_share": _mean([float(r["needs_review"]) for r in results if "needs_review" in r]),
        "latency_p50_s": statistics.median(latencies) if latencies else None,
        "latency_p95_s": _percentile(latencies, 0.95),
    }


def roc_auc(positives: list[float], negatives: list[float]) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half)."""
    if not positives or not negatives:
        return None
    wins = 0.0
    for p in positives:
        for n in negatives:
            wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(positives) * len(negatives))


def score_item(
    item,
    answer_text: str,
    passages: list[tuple[str, str]] | None,
    cited: list[int],
    covered: bool,
    latency_s: float | None,
) -> dict:
    """One question's scores. ``passages`` is None for a run without retrieval."""
    clean = CITATION.sub("", answer_text).strip()
    abstained = not covered or is_abstention(clean)
    result = {
        "question": item.question,
        "expected": item.expected,
        "source": item.source,
        "unanswerable": item.unanswerable,
        "answer": answer_text,
        "abstained": abstained,
        "latency_s": latency_s,
        "f1": token_f1(clean, item.expected) if item.expected and not item.unanswerable else None,
        "exact_match": exact_match(clean, item.expected) if item.expected and not item.unanswerable else None,
        "correct": is_correct(clean, item.expected) if item.expected and not item.unanswerable else None,
        "hit_rank": "n/a",
        "citation_precision": None,
    }
    if passages is not None and not item.unanswerable and (item.source or item.expected):
        result["hit_rank"] = first_hit_rank(passages, item.source, item.expected)
        if cited:
            good = sum(holds_answer(*passages[n - 1], item.source, item.expected) for n in cited)
            result["citation_precision"] = good / len(cited)
    return result


def format_metric(key: str, value) -> str:
    """A metric as shown in tables: seconds to 2 decimals, scores to 3, "n/a" when missing."""
    if value is None:
        return "n/a"
    if key.endswith("_s"):
        return f"{value:.2f}"
    return f"{value:.3f}"
