"""Evaluation sets (per knowledge base) and evaluation runs (stored, comparable).

A set is a list of questions with expected answers, an optional source document and an
optional "unanswerable" mark. A run answers every question with one configuration (model
or adapter, top-k, retrieval on or off), scores it with :mod:`assistant.metrics`, and is
saved under ``<data>/evals/`` so it can be reopened and compared after a change.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from assistant.metrics import score_item, summarize
from assistant.records import RecordTable, read_records, truthy
from assistant.styles import DEFAULT_STYLE, STYLES
from knowledge.errors import Cancelled, ConfigError, ParseError, StoreError
from knowledge.library import check_name
from knowledge.progress import Clock, Progress
from knowledge.store import atomic_write_bytes


@dataclass(frozen=True)
class EvalItem:
    question: str
    expected: str = ""
    source: str = ""
    unanswerable: bool = False


@dataclass
class EvalSet:
    name: str
    items: list[EvalItem]
    skipped: list[int] = field(default_factory=list)
    """Row numbers without a question, or with nothing to check it against."""

    def to_json(self) -> dict:
        return {"name": self.name, "items": [asdict(i) for i in self.items]}

    @classmethod
    def from_json(cls, data: dict) -> EvalSet:
        return cls(data["name"], [EvalItem(**i) for i in data["items"]])


def eval_set_from_table(table: RecordTable, name: str) -> EvalSet:
    q_col = table.column(None, "question")
    if q_col is None:
        raise ParseError(
            f"{table.name} has no question column (columns: {', '.join(table.columns)}); "
            "name one column 'question' (and one 'answer')."
        )
    a_col, s_col, u_col = (table.column(None, role) for role in ("answer", "source", "unanswerable"))
    items, skipped = [], []
    for n, row in enumerate(table.rows, 1):
        question = str(row.get(q_col, "")).strip()
        expected = str(row.get(a_col, "")).strip() if a_col else ""
        source = Path(str(row.get(s_col, "")).strip()).name if s_col else ""
        unanswerable = truthy(row.get(u_col, "")) if u_col else False
        if not question or not (expected or source or unanswerable):
            skipped.append(n)
            continue
        items.append(EvalItem(question, "" if unanswerable else expected, source, unanswerable))
    if not items:
        raise ParseError(
            f"{table.name} has no usable rows: each needs a question and an answer, source or mark."
        )
    return EvalSet(name, items, skipped)


def load_eval_set(path: str | Path, name: str | None = None, data: bytes | None = None) -> EvalSet:
    """A set from a file; named after the file (made into a usable name) unless ``name`` is given."""
    table = read_records(path, data)
    if name is None:
        name = re.sub(r"[^\w\- .]+", "-", Path(path).stem).strip(" .-_") or "questions"
    return eval_set_from_table(table, name[:64])


class EvalSetStore:
    """Evaluation sets of one knowledge base, in ``<kb folder>/evalsets/<name>.json``."""

    def __init__(self, kb_folder: Path) -> None:
        self.root = Path(kb_folder) / "evalsets"

    def names(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted((p.stem for p in self.root.glob("*.json")), key=str.casefold)

    def save(self, evalset: EvalSet) -> None:
        name = check_name(evalset.name, "evaluation set")
        self.root.mkdir(parents=True, exist_ok=True)
        data = json.dumps(EvalSet(name, evalset.items).to_json(), ensure_ascii=False, indent=1)
        atomic_write_bytes(self.root / f"{name}.json", data.encode("utf-8"))

    def get(self, name: str) -> EvalSet:
        path = self.root / f"{check_name(name, 'evaluation set')}.json"
        if not path.exists():
            raise StoreError(
                f"There is no evaluation set called {name!r} (existing: {', '.join(self.names()) or 'none'})."
            )
        return EvalSet.from_json(json.loads(path.read_text(encoding="utf-8")))

    def delete(self, name: str) -> None:
        path = self.root / f"{check_name(name, 'evaluation set')}.json"
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class EvalConfig:
    kb: str = ""
    """Knowledge base to answer from ("" only without retrieval)."""
    adapter: str = ""
    """Tuned adapter to answer with, or "" for the base model."""
    top_k: int = 5
    retrieval: bool = True
    """False answers from the model alone (closed book), to measure what tuning taught it."""
    max_new_tokens: int = 128
    precision: str = ""
    """"" uses the configured precision."""
    decompose: bool = True
    """Split multi-part questions and retrieve for each part."""
    escalate: bool = False
    """Send low-confidence answers to the larger model (when one is configured)."""
    style: str = DEFAULT_STYLE
    """quote, concise or detailed (see assistant.answer.AnswerConfig.style)."""

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.top_k <= 50:
            problems.append(f"`top_k` should be between 1 and 50, got {self.top_k}.")
        if not 8 <= self.max_new_tokens <= 2048:
            problems.append(f"`max_new_tokens` should be between 8 and 2048, got {self.max_new_tokens}.")
        if self.retrieval and not self.kb:
            problems.append("`kb` should name a knowledge base to retrieve from.")
        if self.style not in STYLES:
            problems.append(f"`style` should be one of {', '.join(STYLES)}, got {self.style!r}.")
        if problems:
            raise ConfigError(" ".join(problems))

    def label(self) -> str:
        model = self.adapter or "base model"
        where = f"top-{self.top_k}" if self.retrieval else "no retrieval"
        switches = (
            ("" if self.decompose or not self.retrieval else ", no decomposition")
            + (", escalation" if self.escalate and self.retrieval else "")
            + (f", {self.style}" if self.retrieval and self.style != DEFAULT_STYLE else "")
        )
        return f"{model}, {where}" + (f", {self.kb}" if self.kb else "") + switches


@dataclass
class EvalRun:
    id: str
    set_name: str
    config: EvalConfig
    metrics: dict
    results: list[dict]
    created: str
    model: str = ""
    complete: bool = True

    def to_json(self) -> dict:
        return {**asdict(self), "config": asdict(self.config)}

    @classmethod
    def from_json(cls, data: dict) -> EvalRun:
        return cls(**{**data, "config": EvalConfig(**data["config"])})


class EvalRunStore:
    def __init__(self, data_dir: str | Path) -> None:
        self.root = Path(data_dir) / "evals"
        self.root.mkdir(parents=True, exist_ok=True)

    def save(self, run: EvalRun) -> Path:
        path = self.root / f"{run.id}.json"
        atomic_write_bytes(path, json.dumps(run.to_json(), ensure_ascii=False, indent=1).encode("utf-8"))
        return path

    def get(self, run_id: str) -> EvalRun:
        if not re.fullmatch(r"[\w.-]+", run_id or ""):
            raise StoreError(f"There is no evaluation run {run_id!r}.")
        path = self.root / f"{run_id}.json"
        if not path.exists():
            raise StoreError(f"There is no evaluation run {run_id!r}.")
        return EvalRun.from_json(json.loads(path.read_text(encoding="utf-8")))

    def list(self, kb: str | None = None) -> list[EvalRun]:
        runs = []
        for path in sorted(self.root.glob("*.json"), reverse=True):
            try:
                run = EvalRun.from_json(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError, KeyError):
                continue  # a file from an older version, or not ours
            if kb is None or run.config.kb == kb:
                runs.append(run)
        return runs


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def run_evaluation(
    app, evalset: EvalSet, config: EvalConfig, cancel: threading.Event | None = None
) -> Generator[Progress, None, EvalRun]:
    """Answer every question of ``evalset`` with ``config`` and score the answers."""
    from assistant.answer import AnswerConfig, strip_citations
    from knowledge.retrieve import RetrievalConfig

    cancel = cancel or threading.Event()
    clock = Clock()
    total = len(evalset.items)
    yield clock.event("loading model", 0, total, "questions", config.adapter or "base model")
    model_config = app.model_config(config.adapter or None, config.precision or None)
    model = app.chat_model(model_config)
    answer_config = AnswerConfig(
        max_new_tokens=config.max_new_tokens,
        retrieval=RetrievalConfig(top_k=config.top_k),
        decompose=config.decompose,
        escalate=config.escalate,
        style=config.style,
    )
    results = []
    for n, item in enumerate(evalset.items):
        if cancel.is_set():
            raise Cancelled(f"Evaluation cancelled after {n} of {total} questions.")
        yield clock.event("answering", n, total, "questions", item.question[:60])
        start = time.perf_counter()
        if config.retrieval:
            # The last yield is the finished answer, with its citations checked.
            answer = deque(
                app.ask(
                    config.kb,
                    item.question,
                    config=answer_config,
                    model=model_config,
                    stop=cancel,
                    source=None,
                ),
                maxlen=1,
            )[0]
            passages = [(h.doc, h.text) for h in answer.passages]
            text, cited, covered = answer.text, answer.cited, answer.covered
            outcome = {
                "confidence": answer.confidence,
                "escalated": answer.escalated,
                "needs_review": answer.needs_review,
            }
        else:
            messages = [{"role": "user", "content": item.question}]
            text = "".join(model.stream(messages, config.max_new_tokens, 0.0, stop=cancel)).strip()
            passages, cited, covered = None, [], True
            outcome = {}
        latency = time.perf_counter() - start
        result = score_item(item, text, passages, cited, covered, latency) | outcome
        result["answer"] = text if config.retrieval else strip_citations(text)
        results.append(result)
    yield clock.event("answering", total, total, "questions", "scoring")
    return EvalRun(
        id=new_run_id(),
        set_name=evalset.name,
        config=config,
        metrics=summarize(results),
        results=results,
        created=time.strftime("%Y-%m-%d %H:%M:%S"),
        model=model.label,
    )


def differences(runs: list[EvalRun], limit: int = 10) -> list[dict]:
    """The questions whose answer F1 differs most between the runs (same set), with each answer."""
    if len(runs) < 2:
        return []
    by_question = [{r["question"]: r for r in run.results} for run in runs]
    common = [q for q in by_question[0] if all(q in b for b in by_question[1:])]
    rows = []
    for question in common:
        scores = [
            b[question]["f1"] if b[question]["f1"] is not None else float(b[question]["abstained"])
            for b in by_question
        ]
        rows.append(
            {
                "question": question,
                "expected": by_question[0][question]["expected"] or "(unanswerable)",
                "spread": max(scores) - min(scores),
                "answers": [b[question]["answer"] for b in by_question],
                "scores": scores,
            }
        )
    rows.sort(key=lambda r: -r["spread"])
    return [r for r in rows if r["spread"] > 0][:limit]


DRAFT_PROMPT = (
    "Read the passage and write one question a customer could ask that the passage answers, "
    "then the answer taken from the passage. Reply in exactly this format:\nQuestion: ...\nAnswer: ..."
)
DRAFT_PROMPT_JA = (
    "資料を読み、その資料で答えられるお客様からの質問を一つ書き、資料に基づく答えを書いてください。"
    "次の形式で答えてください:\n質問: ...\n回答: ..."
)
_DRAFT = re.compile(r"(?:Question|質問)\s*[:：]\s*(.+?)\s*(?:Answer|回答)\s*[:：]\s*(.+)", re.S)


def draft_eval_set(
    app, kb_name: str, count: int = 10, cancel: threading.Event | None = None
) -> Generator[Progress, None, EvalSet]:
    """A draft set: the model writes one question and answer per sampled passage, for review."""
    from knowledge.lexical import is_japanese

    cancel = cancel or threading.Event()
    kb = app.library.get(kb_name)
    chunks = [(cid, text) for cid, _, text in kb.iter_chunk_texts() if len(text) > 200]
    if not chunks:
        raise StoreError(
            f"The knowledge base {kb_name!r} has no passages long enough to ask about; add documents."
        )
    step = max(1, len(chunks) // count)
    picked = chunks[::step][:count]
    docs = kb.chunks_by_id([cid for cid, _ in picked])
    model = app.chat_model()
    clock = Clock()
    items = []
    for n, (cid, text) in enumerate(picked):
        if cancel.is_set():
            raise Cancelled("Drafting was cancelled.")
        yield clock.event("drafting questions", n, len(picked), "passages")
        prompt = DRAFT_PROMPT_JA if is_japanese(text) else DRAFT_PROMPT
        messages = [{"role": "system", "content": prompt}, {"role": "user", "content": text[:1500]}]
        reply = "".join(model.stream(messages, 96, 0.0, stop=cancel))
        match = _DRAFT.search(reply)
        if match:
            question = match.group(1).strip().splitlines()[0]
            answer = match.group(2).strip().split("\n\n")[0]
            items.append(EvalItem(question, answer, docs[cid].doc if cid in docs else ""))
    yield clock.event("drafting questions", len(picked), len(picked), "passages")
    return EvalSet(f"draft-{time.strftime('%Y%m%d-%H%M')}", items)


def run_eval_job(
    request: dict, folder: Path, data_dir: Path, cancel: threading.Event
) -> Generator[Progress, None, dict]:
    """The worker side of ``Tsumugi.start_eval``: every configuration in turn, each run stored."""
    from assistant.config import Settings, escalation_key
    from assistant.escalate import EscalationConfig
    from assistant.models import ModelConfig
    from assistant.service import Tsumugi

    s = request["settings"]
    app = Tsumugi(
        Settings(
            data_dir=Path(s["data_dir"]),
            model_cache=Path(s["model_cache"]),
            model=ModelConfig(**s["model"]),
            embed_model=s["embed_model"],
            # The endpoint without its key: the worker reads the key from its environment.
            escalation=EscalationConfig(**s.get("escalation", {}), api_key=escalation_key()),
        )
    )
    evalset = EvalSet.from_json(request["set"])
    configs = [EvalConfig(**c) for c in request["configs"]]
    run_ids = []
    for i, config in enumerate(configs, 1):
        gen = app.evaluate(evalset, config, cancel)
        try:
            while True:
                event = next(gen)
                event.stage = f"run {i}/{len(configs)} ({config.label()}): {event.stage}"
                yield event
        except StopIteration as stop:
            run_ids.append(stop.value.id)
    return {"runs": run_ids}
