"""Grounded answers: numbered passages in, a streamed answer with [n] citations out.

When retrieval finds nothing relevant the model is not asked at all: the answer says that
the documents do not cover the question, in the question's language.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

from assistant.answering import confidence as conf
from assistant.answering.citations import drop_repeats, fix_citations, marks_before_end
from assistant.answering.decompose import asked, gather_passages, leaning_on, split_question
from assistant.answering.evidence import (
    MAX_UNITS,
    Evidence,
    SupportCheck,
    answer_coverage,
    select,
    term_weights,
)
from assistant.answering.prompt import NOT_COVERED, build_messages, concise_messages
from assistant.answering.styles import DEFAULT_STYLE, STYLES
from assistant.generation.backend import ModelError
from knowledge.embed import get_embedder
from knowledge.errors import ConfigError
from knowledge.lexical import is_japanese
from knowledge.query import Query
from knowledge.retrieve import Hit, RetrievalConfig
from knowledge.store import KnowledgeBase
from knowledge.text import CITATION as _CITATION
from knowledge.text import sentences
from knowledge.text import strip_citations as strip_citations


@dataclass(frozen=True)
class AnswerConfig:
    max_new_tokens: int = 256
    """Longest answer, in tokens of the chat model."""
    temperature: float = 0.0
    """0 answers greedily (repeatable); higher values vary the wording."""
    history_turns: int = 2
    """Earlier question/answer pairs given to the model and to retrieval."""
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    decompose: bool = True
    """Split a multi-part question into sub-questions and retrieve for each."""
    confidence_threshold: float | None = None
    """Below it an answer is escalated to the larger model, or marked "needs review"
    (None: the threshold in settings, TSUMUGI_CONFIDENCE_THRESHOLD)."""
    escalate: bool = True
    """Send low-confidence answers to the larger model when one is configured."""
    style: str = DEFAULT_STYLE
    """quote: the passages' own sentences, each cited; concise: a short answer the model writes
    from the evidence, checked sentence by sentence; detailed: the model writes from the whole
    passages, checked the same way. ("unchecked", the model's text as it wrote it, exists only
    to measure the check in the benchmark.)"""

    def __post_init__(self) -> None:
        problems = []
        if self.style not in STYLES + ("unchecked",):
            problems.append(f"`style` should be one of {', '.join(STYLES)}, got {self.style!r}.")
        if not 1 <= self.max_new_tokens <= 4096:
            problems.append(f"`max_new_tokens` should be between 1 and 4096, got {self.max_new_tokens}.")
        if not 0 <= self.temperature <= 2:
            problems.append(f"`temperature` should be between 0 and 2, got {self.temperature}.")
        if self.confidence_threshold is not None and not 0 <= self.confidence_threshold <= 1:
            problems.append(
                f"`confidence_threshold` should be between 0 and 1, got {self.confidence_threshold}."
            )
        if not 0 <= self.history_turns <= 10:
            problems.append(f"`history_turns` should be between 0 and 10, got {self.history_turns}.")
        if problems:
            raise ConfigError(" ".join(problems))


@dataclass
class Answer:
    """An answer as it streams: ``text`` grows until ``done``."""

    question: str
    text: str = ""
    passages: list[Hit] = field(default_factory=list)
    covered: bool = True
    done: bool = False
    model: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    confidence: float | None = None
    """0-1, from token probabilities and retrieval scores (see assistant/confidence.py)."""
    signals: dict[str, float] = field(default_factory=dict)
    needs_review: bool = False
    """Low confidence and no larger model to ask (or it failed): a person should check it."""
    escalated: bool = False
    """The larger model wrote ``text``; ``first_answer`` holds the small model's."""
    first_answer: str = ""
    first_model: str = ""
    sub_questions: list[str] = field(default_factory=list)
    """The parts a multi-part question was split into (empty when not split)."""
    method: str = "quoted"
    """quoted (the passages' own sentences), checked (the model's sentences, each supported by
    the passage it cites, and evidence in place of those that were not), or generated (unchecked)."""
    style: str = DEFAULT_STYLE
    segments: list[dict] = field(default_factory=list)
    """The answer's sentences in order, each {"text", "quoted"}: quoted ones are the passages' words."""
    check: dict[str, int] = field(default_factory=dict)
    """What the support check did: written, kept, replaced, removed sentences."""
    draft_id: str = ""
    """The stored draft's id, for accepting or rejecting it (drafts only)."""
    notice: str = ""
    """One sentence for the user about what happened (escalation failed, quoted passages…)."""
    generation: dict = field(default_factory=dict)
    """How the model's text was generated (empty when the model wrote none): ``backend``
    (local or remote), token counts where known, and ``logprobs``: whether the backend
    returned token log-probabilities (a remote server may not; the confidence does not need them).
    An escalated answer's record is the larger model's, with the first one in ``escalated_from``."""

    @property
    def cited(self) -> list[int]:
        """1-based numbers of the passages the answer cites, in order of first citation."""
        seen: list[int] = []
        for match in _CITATION.finditer(self.text):
            n = int(match.group(1))
            if 1 <= n <= len(self.passages) and n not in seen:
                seen.append(n)
        return seen

    def to_json(self) -> dict:
        return {
            "question": self.question,
            "answer": self.text,
            "covered": self.covered,
            "model": self.model,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "confidence_label": conf.label(self.confidence),
            "signals": self.signals,
            "needs_review": self.needs_review,
            "escalated": self.escalated,
            "first_answer": self.first_answer or None,
            "first_model": self.first_model or None,
            "sub_questions": self.sub_questions,
            "method": self.method,
            "style": self.style,
            "segments": self.segments,
            "check": self.check,
            "notice": self.notice or None,
            "draft_id": self.draft_id or None,
            "generation": self.generation,
            "citations": [{"n": n, **self.passages[n - 1].to_json()} for n in self.cited],
            "passages": [p.to_json() for p in self.passages],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


MessagesFn = Callable[[str, list[Hit], list[tuple[str, str]], str], list[dict]]


OTHER_LANGUAGE = {
    "en": (
        "The documents seem to be written in another language than this question, and the embedding "
        "model ({model}) matches questions to passages only within one language. Ask in the "
        "documents' language, or re-embed the knowledge base with a multilingual model (Knowledge tab)."
    ),
    "ja": (
        "資料はこの質問とは別の言語で書かれているようです。埋め込みモデル（{model}）は、同じ言語の中でしか"
        "質問と資料を結びつけられません。資料の言語で質問するか、多言語のモデルでナレッジベースを埋め込み"
        "直してください（「ナレッジ」タブ）。"
    ),
}
"""Said in the question's language: it is the asker who cannot read the documents' one."""

NO_NUMBER_GIVEN = {
    "en": "The question asks for a number, and this answer gives none: check the documents before using it.",
    "ja": "ご質問は数や量を尋ねていますが、この回答には数値がありません。お使いになる前に資料をご確認ください。",
}
"""Why an answer's confidence is low when it gives no number to a question asking for one."""


def other_language(kb: KnowledgeBase, query: Query) -> str:
    """Why nothing was found, when the cause is the question's language: its embedding model
    does not read it, and none of its words in that script occur in the documents (a Japanese
    question on English manuals). Said, because "not in the documents" alone reads as if the
    answer were missing; empty otherwise."""
    if get_embedder(kb.embed_model).reads(query.text):
        return ""
    own = [t for t in dict.fromkeys(query.terms) if is_japanese(t) == query.japanese]
    if not own:
        return ""
    count, df = kb.term_stats(own)
    if not count or any(df.get(t) for t in own):
        return ""
    return OTHER_LANGUAGE[query.lang].format(model=Path(kb.embed_model).name or kb.embed_model)


def answer_question(
    kb: KnowledgeBase,
    model,
    question: str | Query,
    history: list[tuple[str, str]] | None = None,
    config: AnswerConfig | None = None,
    stop: threading.Event | None = None,
    escalation=None,
    messages_fn: MessagesFn | None = None,
    finish: Callable[[str], str] | None = None,
    search: str | Query | None = None,
) -> Generator[Answer, None, Answer]:
    """Stream an :class:`Answer`; each yield is the same object with more text.

    The evidence is chosen first (:mod:`assistant.answering.evidence`); the style decides whether the
    model writes around it, and every sentence it writes is checked before it is shown.
    ``escalation`` is an :class:`assistant.answering.escalate.EscalationConfig`; ``messages_fn`` builds
    the prompt for the detailed style (default: :func:`build_messages`); ``finish`` turns the
    final text into what is shown (drafting wraps it in a greeting and a signature).
    ``search`` is what retrieval, the evidence and the prompt read when it is not the whole
    question (a draft: the customer's message without its pleasantries, :func:`about`).
    """
    config = config or AnswerConfig()
    history = (history or [])[-config.history_turns :] if config.history_turns else []
    messages_fn = messages_fn or build_messages
    query = Query.of(question)  # analysed once; every step below reads this value
    question, lang = query.text, query.lang
    sought = query if search is None else Query.of(search)
    start = time.perf_counter()
    answer = Answer(question=question, model=getattr(model, "label", ""), style=config.style)
    # A message's questions are searched each with the rest of it (gather_passages' whole):
    # searched as one text ("I bought the rice cooker last week and want to return it. When is
    # the refund?"), the question covered too small a share of it to pass the relevance test.
    asks = sought if search is None or not config.decompose else Query.of(asked(sought.text))
    parts = split_question(asks, model, stop) if config.decompose else [asks]
    whole = None if asks.text == sought.text else sought
    if whole is not None:
        parts = leaning_on(whole, parts)
    if len(parts) > 1:
        answer.sub_questions = [p.text for p in parts]
    context = [u for u, _ in history]
    hits = gather_passages(kb, parts, config.retrieval, context=context, stop=stop, whole=whole)
    answer.timings["retrieval_s"] = time.perf_counter() - start
    answer.passages = hits
    if stop is not None and stop.is_set():  # nobody waits for the rest: unfinished, unrecorded
        yield answer
        return answer
    if not hits:
        answer.covered = False
        answer.text = NOT_COVERED[lang]
        answer.notice = other_language(kb, query)
        answer.confidence = 0.0
        answer.done = True
        answer.timings["total_s"] = time.perf_counter() - start
        yield answer
        return answer
    embedder = get_embedder(kb.embed_model)
    read = parts if len(parts) > 1 or whole is not None else [Query.of(asked(sought.text))]
    if context:  # "What should I do?" asks about the turn before, as retrieval took it
        read = leaning_on(Query.of(f"{context[-1]} {sought.text}"), read)
    evidence = gather_evidence(kb, read, hits, embedder, config.style)
    answer.timings["evidence_s"] = time.perf_counter() - start - answer.timings["retrieval_s"]
    yield answer
    messages = messages_fn(sought.text, hits, history, lang)
    info: dict = {}
    stopped = False
    if config.style == "unchecked":
        yield from _generate_unchecked(answer, model, messages, hits, config, stop, info, start)
        stopped = stop is not None and stop.is_set()
    elif config.style == "quote":
        _show_quote(answer, evidence, lang)
        answer.timings["first_token_s"] = time.perf_counter() - start
    else:
        if config.style == "concise":
            messages = concise_messages(sought.text, evidence, lang)
        tokens = config.max_new_tokens if config.style == "detailed" else min(config.max_new_tokens, 96)
        check = SupportCheck(hits, evidence, embedder)
        yield from _stream_checked(answer, model, messages, tokens, config, stop, info, check, lang, start)
        stopped = stop is not None and stop.is_set()
        if not check.result.kept and not stopped:
            # Nothing the model wrote held up: the evidence itself is the answer.
            _show_quote(answer, evidence, lang)
            answer.notice = (
                "The model's sentences were not supported by the documents; "
                "these are the documents' own sentences."
            )
        answer.check = {k: getattr(check.result, k) for k in ("written", "kept", "replaced", "removed")}
    if stopped:  # stopped while the model wrote: what it wrote so far, unfinished and unrecorded
        answer.timings["total_s"] = time.perf_counter() - start
        yield answer
        return answer
    answer.generation = generation_record(info)
    _judge(answer, model, evidence, hits, asked(sought.text), config.style)
    answer.text = finish(answer.text) if finish else answer.text
    threshold = config.confidence_threshold
    if threshold is None:
        threshold = escalation.threshold if escalation is not None else conf.DEFAULT_THRESHOLD
    if answer.confidence < threshold and not (stop and stop.is_set()):
        if escalation is not None and escalation.enabled and config.escalate:
            yield from _escalate(
                answer, messages, hits, config, escalation, stop, finish, evidence, embedder, lang, sought
            )
            # The confidence is now the larger model's answer's: still low, a person checks it.
            answer.needs_review = answer.needs_review or answer.confidence < threshold
        else:
            answer.needs_review = True
    if not answer.signals.get("number_given", 1) and not (stop and stop.is_set()):
        answer.notice = f"{answer.notice} {NO_NUMBER_GIVEN[lang]}".strip()
    if stop is not None and stop.is_set():  # stopped while the larger model wrote: as above
        answer.timings["total_s"] = time.perf_counter() - start
        yield answer
        return answer
    answer.done = True
    answer.timings["total_s"] = time.perf_counter() - start
    yield answer
    return answer


def generation_record(info: dict) -> dict:
    """The answer record's account of a generation, from the ``info`` a backend filled."""
    if not info:
        return {}
    record = {"backend": info.get("backend", "local")}
    record.update({k: info[k] for k in ("prompt_tokens", "new_tokens") if k in info})
    record["logprobs"] = bool(info.get("logprobs", "token_logprobs" in info))
    return record


def gather_evidence(kb: KnowledgeBase, parts: list[Query], hits: list[Hit], embedder, style: str) -> Evidence:
    """The evidence for each part of a question, merged; its measurements are the weakest part's
    (a message is only answered when every part is)."""
    limit = MAX_UNITS.get(style, MAX_UNITS["quote"])
    found = []
    for part in parts:
        found.append(select(part, hits, embedder, term_weights(kb, list(part.content_terms)), limit))
    if len(found) == 1:
        return found[0]
    units = list(dict.fromkeys(u for e in found for u in e.units))
    weights = {t: w for e in found for t, w in e.weights.items()}
    return Evidence(
        units=units,
        best_score=min(e.best_score for e in found),
        best_similarity=min(e.best_similarity for e in found),
        coverage=min(e.coverage for e in found),
        read=all(e.read for e in found),
        weights=weights,
    )


def _show_quote(answer: Answer, evidence: Evidence, lang: str) -> None:
    answer.text = evidence.quote(lang == "ja")
    answer.segments = [{"text": Evidence([u]).quote(lang == "ja"), "quoted": True} for u in evidence.units]
    answer.method = "quoted"


def _stream_checked(answer, model, messages, tokens, config, stop, info, check: SupportCheck, lang, start):
    """Stream the model's answer, showing each sentence once it is finished and checked."""
    raw, done = "", 0
    for piece in model.stream(messages, tokens, config.temperature, stop=stop, info=info):
        if not raw:
            answer.timings["first_token_s"] = time.perf_counter() - start
        raw += piece
        finished = sentences(marks_before_end(raw.replace("\ufffd", "")))[:-1]
        if len(finished) > done:
            for sentence in finished[done:]:
                check.add(sentence)
            done = len(finished)
            answer.text = check.text(lang == "ja")
            yield answer
    rest = sentences(marks_before_end(raw.replace("\ufffd", "")))[done:]
    for n, sentence in enumerate(rest):
        # The last piece of an answer cut at the length limit is half a sentence: not shown.
        if n < len(rest) - 1 or re.search(r"[.!?。！？:：]\s*$|\]\s*$", sentence):
            check.add(sentence)
    answer.text = check.text(lang == "ja")
    answer.segments = [{"text": s, "quoted": q} for s, q in check.result.sentences]
    answer.method = "checked"


def _generate_unchecked(answer, model, messages, hits, config, stop, info, start):
    """The model's answer with citations fixed and loops cut, but no support check."""
    raw = ""
    for piece in model.stream(messages, config.max_new_tokens, config.temperature, stop=stop, info=info):
        if not raw:
            answer.timings["first_token_s"] = time.perf_counter() - start
        raw += piece
        answer.text = raw
        yield answer
    # A generation cut mid-character (loop or length limit) ends in a replacement character.
    answer.text = fix_citations(drop_repeats(raw.replace("\ufffd", "").strip()), hits)
    answer.segments = [{"text": answer.text, "quoted": False}]
    answer.method = "generated"


def _escalate(
    answer: Answer, messages, hits, config, escalation, stop, finish, evidence, embedder, lang, sought
):
    """Ask the larger model the same question with the same passages, streaming into ``answer``,
    and score what it wrote as the small model's answer was."""
    from assistant.answering.escalate import escalation_model

    remote = escalation_model(escalation)
    first_text, first_model = answer.text, answer.model
    answer.first_answer, answer.first_model = first_text, first_model
    answer.escalated, answer.model, answer.text = True, remote.label, ""
    yield answer
    started = time.perf_counter()
    raw = ""
    info: dict = {}
    try:
        for piece in remote.stream(messages, config.max_new_tokens, config.temperature, stop=stop, info=info):
            raw += piece
            answer.text = raw
            yield answer
        if stop is not None and stop.is_set():
            return  # unfinished: the caller says so
        if not raw.strip():
            raise ModelError("The larger model returned an empty answer.")
    except ModelError as exc:
        answer.escalated, answer.model, answer.text = False, first_model, first_text
        answer.first_answer = answer.first_model = ""
        answer.needs_review = True
        answer.notice = f"{exc} The small model's answer is shown; check it before use."
        return
    first = {**answer.generation, "confidence": round(answer.confidence, 4)}
    answer.generation = {**generation_record(info), "escalated_from": first}
    # The larger model's sentences go through the same check as the small model's.
    check = SupportCheck(hits, evidence, embedder)
    for sentence in sentences(marks_before_end(fix_citations(drop_repeats(raw.strip()), hits))):
        check.add(sentence)
    answer.check = {k: getattr(check.result, k) for k in ("written", "kept", "replaced", "removed")}
    if not check.result.kept:
        _show_quote(answer, evidence, lang)
    else:
        answer.text = check.text(lang == "ja")
        answer.segments = [{"text": s, "quoted": q} for s, q in check.result.sentences]
        answer.method = "checked"
    _judge(answer, remote, evidence, hits, asked(sought.text), config.style)
    answer.text = finish(answer.text) if finish else answer.text
    answer.timings["escalation_s"] = time.perf_counter() - started


def _judge(answer: Answer, model, evidence: Evidence, hits, asks: str, style: str) -> None:
    """The signals and the confidence of the answer as it is shown (before ``finish``)."""
    signals = conf.signals(evidence, answer, answer_coverage(answer.text, evidence), hits, asks)
    answer.signals = signals.to_json()
    answer.confidence = conf.score(signals, conf.weights_for(model, style))
