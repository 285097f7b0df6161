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

from knowledge.lexical import content_terms, distinctive_terms, is_japanese, terms
from knowledge.query import Query
from knowledge.retrieve import Hit, RetrievalConfig, retrieve
from knowledge.store import KnowledgeBase
from knowledge.text import points_back, sentences

MAX_PARTS = 4
MAX_PASSAGES = 10
"""Most passages given to the model for a split question (all parts together)."""

_WH = r"(?:how|what|which|where|when|who|why|does|do|is|are|can|could|should|will|would|may|did)"
_JOINED = re.compile(rf"(?:,\s*|\s+)(?:and|also|plus|as well as)\s+(?=(?:also\s+)?{_WH}\b)", re.I)
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+(.+)$", re.M)
_JA_JOIN = re.compile(r"(?<=[かか。])\s*(?:また|それと|あと|それから)[、,]?")
_LEADING = re.compile(r"^(?:and|also|plus|then)\s+|^(?:また|それと|あと|それから)[、,]?", re.I)

SPLIT_PROMPT = (
    "Split the customer's message into separate questions. Write each question on its own line, "
    "complete, using the customer's words. Do not answer them.\n\n"
    "Message: How long is the warranty on the Zephyr kettle and can I pay in instalments?\n"
    "Questions:\nHow long is the warranty on the Zephyr kettle?\nCan I pay for the Zephyr kettle in instalments?\n\n"
    "Message: {question}\nQuestions:\n"
)


_QUESTION_START = re.compile(rf"^\s*(?:and\s+|also\s+)?{_WH}\b", re.I)


def _is_question(sentence: str) -> bool:
    s = sentence.strip()
    if not s:
        return False
    if s.endswith(("?", "？")):
        return True
    if is_japanese(s):
        return s.endswith(("か。", "か"))
    return bool(_QUESTION_START.match(s))


def _question_sentences(text: str) -> list[str]:
    """The sentences of a message that ask something (greetings and context left out)."""
    return [s for s in sentences(text) if _is_question(s)]


def asked(message: str) -> str:
    """What a message asks: its question sentences, without greetings, context or sign-off
    (the whole message when no sentence is a question). A small model answers the bare
    question far better than an email with pleasantries around it."""
    questions = _question_sentences(message)
    joiner = "" if is_japanese(message) else " "
    return joiner.join(questions) if questions else message.strip()


def about(message: str, kb: KnowledgeBase) -> str:
    """What a customer's message is about: its sentences less those that ask nothing and share
    no term with the knowledge base (greetings, a self-introduction, the sign-off and the
    signature: お世話になっております。山田です。… 山田太郎). Searched whole, such a message
    matched no passage well enough: the pleasantries' terms, which no document holds, weigh
    most in the coverage test, and a draft for an answerable Japanese question said it would
    check and reply later (``python -m bench.messages``). A question is always kept, so one
    about something the documents never mention still finds nothing; with nothing left, the
    whole message."""
    told = [s for line in message.splitlines() for s in sentences(line.strip())]
    mentioned = {s: distinctive_terms(list(dict.fromkeys(content_terms(terms(s))))) for s in told}
    known = kb.document_frequencies([t for named in mentioned.values() for t in named])  # one read
    kept = [s for s in told if _is_question(s) or any(known.get(t) for t in mentioned[s])]
    # One line each: a sentence ends at a line break, and a list's items start lines.
    return "\n".join(kept) or message.strip()


def looks_multipart(question: str) -> bool:
    """Whether a message shows the cues of several questions in one."""
    if len(_LIST_ITEM.findall(question)) >= 2:
        return True
    asked = _question_sentences(question)
    if len(asked) >= 2:
        return True
    joiner = _JA_JOIN if is_japanese(question) else _JOINED
    return any(joiner.search(s) for s in asked)


def rule_split(question: str) -> list[str]:
    """Sub-questions found by the cues alone (the whole question when there are none)."""
    items = _LIST_ITEM.findall(question)
    if len(items) >= 2:
        parts = items
    else:
        joiner = _JA_JOIN if is_japanese(question) else _JOINED
        parts = [p for s in _question_sentences(question) for p in joiner.split(s)]
    parts = [_tidy(p) for p in parts]
    parts = [p for p in parts if len(content_terms(terms(p))) >= 1]
    return parts[:MAX_PARTS] if len(parts) >= 2 else [question.strip()]


_SALUTATION = re.compile(
    r"^(?:hi|hello|hey|dear [^,]{1,30}|good (?:morning|afternoon|evening))\s*[,!]\s*", re.I
)


def _tidy(part: str) -> str:
    part = _SALUTATION.sub("", part.strip(" ,、。"))
    part = _LEADING.sub("", part).strip()
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


def model_split(question: str, model, stop=None) -> list[str]:
    """The small model's split, or [] when it is not usable (or ``stop`` was set)."""
    prompt = SPLIT_PROMPT.format(question=question.replace("\n", " "))
    try:
        text = "".join(model.stream([{"role": "user", "content": prompt}], max_new_tokens=96, stop=stop))
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


def split_question(question: str | Query, model=None, stop=None) -> list[Query]:
    """Sub-questions of a multi-part question, each analysed; a one-part question comes back alone."""
    question = Query.of(question)
    if not looks_multipart(question.text):
        return [question if question.text == question.text.strip() else Query.of(question.text.strip())]
    parts = model_split(question.text, model, stop) if model is not None and not question.japanese else []
    return [Query.of(p) for p in parts or rule_split(question.text)]


def _asked_in(kb: KnowledgeBase, question: Query, message: Query, config: RetrievalConfig) -> list[Hit]:
    """A question's passages, searched with the message it was asked in, by retrieval's rule for
    a conversation: the message helps rank, but only the question makes a passage relevant,
    unless it points back ("Can I return it?"). Searched whole, 'いつも利用させていただいて
    おります。店舗で商品を受け取ることはできますか？' was answered from the cash-on-delivery
    passage at medium confidence. A question that names nothing ('どうすればよいですか？')
    is the message itself (:func:`leaning_on`)."""
    if question.text == message.text:
        return retrieve(kb, message, config)
    return retrieve(kb, question, config, context=[message.text])


def leaning_on(message: Query, parts: list[Query]) -> list[Query]:
    """A message's questions, with one that names nothing of its own ('どうすればよいですか？',
    'What can I do?': no informative term) replaced by the message, which says what it is about."""
    return [p if p.content_terms else message for p in parts]


def gather_passages(
    kb: KnowledgeBase,
    parts: list[str | Query],
    config: RetrievalConfig,
    context: list[str] | None = None,
    stop=None,
    whole: Query | None = None,
) -> list[Hit]:
    """Retrieve for each part and merge the rankings, best ranks first, without repeats; a set
    ``stop`` event ends it at the next part, with what was retrieved so far. ``whole``: the
    message the parts were asked in, when it says more than they do (what the customer bought,
    what happened); each part is then searched with it (:func:`_asked_in`)."""
    parts = [Query.of(p) for p in parts]
    if stop is not None and stop.is_set():
        return []
    if whole is not None:
        rankings = []
        for part in parts:
            if stop is not None and stop.is_set():
                break
            rankings.append(_asked_in(kb, part, whole, config))
    elif len(parts) == 1:
        return retrieve(kb, parts[0], config, context=context)
    else:
        # The whole question's own ranking leads: a split (right or wrong) never loses the
        # passages one retrieval of the question would have given.
        rankings = [retrieve(kb, " ".join(p.text for p in parts), config, context=context)]
        for n, part in enumerate(parts):
            if stop is not None and stop.is_set():
                break
            # "…and does it come in blue?": the part leans on the first one for what "it" is.
            part_context = [parts[0].text] if n and points_back(part.text) else context
            rankings.append(retrieve(kb, part, config, context=part_context))
    merged: dict[int, Hit] = {}
    limit = min(MAX_PASSAGES, config.top_k * len(parts))
    for rank in range(config.top_k):
        for ranking in rankings:
            if rank < len(ranking) and ranking[rank].chunk_id not in merged and len(merged) < limit:
                merged[ranking[rank].chunk_id] = ranking[rank]
    return list(merged.values())
