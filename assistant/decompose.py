"""Multi-part questions: split into sub-questions, retrieve for each, answer from the union.

One retrieval for "How do I wash the RainGuard jacket, and what is the CozyNights bag's
temperature rating?" ranks passages about whichever half dominates the query, and the other
half's passages often fall out of the top-k. Retrieving for each part separately finds
both (``python -m bench --only decomposition`` measures it).

A question is split only when it looks like several questions: more than one question mark,
a list, or a conjunction followed by a question word. The small model then writes the
sub-questions; its split is kept only when every part is a question made of the original's
words (a 135M model sometimes answers instead, or invents), and a rule-based split on the
same cues is used otherwise.
"""

from __future__ import annotations

import re

from knowledge.lexical import content_terms, is_japanese, terms
from knowledge.retrieve import Hit, RetrievalConfig, retrieve
from knowledge.store import KnowledgeBase

MAX_PARTS = 4
MAX_PASSAGES = 10
"""Most passages given to the model for a split question (all parts together)."""

_WH = r"(?:how|what|which|where|when|who|why|does|do|is|are|can|could|should|will|would|may|did)"
_JOINED = re.compile(rf"(?:,\s*|\s+)(?:and|also|plus|as well as)\s+(?=(?:also\s+)?{_WH}\b)", re.I)
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+(.+)$", re.M)
_QUESTION_END = re.compile(r"(?<=[?？])\s*")
_JA_JOIN = re.compile(r"(?<=[かか。])\s*(?:また|それと|あと|それから)[、,]?")
_LEADING = re.compile(r"^(?:and|also|plus|then)\s+|^(?:また|それと|あと|それから)[、,]?", re.I)
_PRONOUN = re.compile(r"\b(?:it|its|they|them|their|this|that|these|those|one)\b", re.I)

SPLIT_PROMPT = (
    "Split the customer's message into separate questions. Write each question on its own line, "
    "complete, using the customer's words. Do not answer them.\n\n"
    "Message: How long is the warranty on the Zephyr kettle and can I pay in instalments?\n"
    "Questions:\nHow long is the warranty on the Zephyr kettle?\nCan I pay for the Zephyr kettle in instalments?\n\n"
    "Message: {question}\nQuestions:\n"
)


def looks_multipart(question: str) -> bool:
    """Whether a question shows the cues of several questions in one."""
    if len(_LIST_ITEM.findall(question)) >= 2:
        return True
    if len(re.findall(r"[?？]", question.strip().rstrip("?？"))) >= 1:
        return True
    if is_japanese(question):
        return bool(_JA_JOIN.search(question))
    return bool(_JOINED.search(question))


def rule_split(question: str) -> list[str]:
    """Sub-questions found by the cues alone (the whole question when there are none)."""
    items = _LIST_ITEM.findall(question)
    if len(items) >= 2:
        parts = items
    else:
        parts = [p for p in _QUESTION_END.split(question.strip()) if p.strip()]
        if is_japanese(question):
            parts = [q for p in parts for q in _JA_JOIN.split(p)]
        else:
            parts = [q for p in parts for q in _JOINED.split(p)]
    parts = [_tidy(p) for p in parts]
    parts = [p for p in parts if len(content_terms(terms(p))) >= 1]
    return parts[:MAX_PARTS] if len(parts) >= 2 else [question.strip()]


def _tidy(part: str) -> str:
    part = _LEADING.sub("", part.strip(" ,、。")).strip()
    if not part:
        return part
    if is_japanese(part):
        return part
    part = part[0].upper() + part[1:]
    return part if part.endswith("?") else part.rstrip(".") + "?"


def _faithful(part: str, question: str) -> bool:
    """A proposed sub-question is a question made mostly of the original's words."""
    words = set(content_terms(terms(part)))
    original = set(content_terms(terms(question)))
    if not words or len(part) > len(question):
        return False
    return len(words & original) / len(words) >= 0.6


def model_split(question: str, model) -> list[str]:
    """The small model's split, or [] when it is not usable."""
    prompt = SPLIT_PROMPT.format(question=question.replace("\n", " "))
    try:
        text = "".join(model.stream([{"role": "user", "content": prompt}], max_new_tokens=96))
    except Exception:  # a failed split only means one retrieval, as without decomposition
        return []
    parts = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:\d+[.)]|[-*•]|Questions?:)\s*", "", line).strip()
        if line and line not in parts:
            parts.append(line)
    if not 2 <= len(parts) <= MAX_PARTS or not all(_faithful(p, question) for p in parts):
        return []
    return parts


def split_question(question: str, model=None) -> list[str]:
    """Sub-questions of a multi-part question; a one-part question comes back alone."""
    if not looks_multipart(question):
        return [question.strip()]
    if model is not None and not is_japanese(question):
        parts = model_split(question, model)
        if parts:
            return parts
    return rule_split(question)


def gather_passages(
    kb: KnowledgeBase,
    parts: list[str],
    config: RetrievalConfig,
    context: list[str] | None = None,
) -> list[Hit]:
    """Retrieve for each part and merge the rankings, best ranks first, without repeats."""
    if len(parts) == 1:
        return retrieve(kb, parts[0], config, context=context)
    rankings = []
    for n, part in enumerate(parts):
        # "…and does it come in blue?": the part leans on the first one for what "it" is.
        part_context = [parts[0]] if n and _PRONOUN.search(part) else context
        rankings.append(retrieve(kb, part, config, context=part_context))
    merged: dict[int, Hit] = {}
    limit = min(MAX_PASSAGES, config.top_k * len(parts))
    for rank in range(config.top_k):
        for ranking in rankings:
            if rank < len(ranking) and ranking[rank].chunk_id not in merged and len(merged) < limit:
                merged[ranking[rank].chunk_id] = ranking[rank]
    return list(merged.values())
