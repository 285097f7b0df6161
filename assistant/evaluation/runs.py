"""Evaluation runs: a set answered with one configuration (model or adapter, top-k, retrieval
on or off, style), scored with :mod:`assistant.evaluation.metrics` and saved under
``<data>/evals/`` so it can be reopened and compared after a change.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Generator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from assistant.answering.styles import DEFAULT_STYLE, STYLES
from assistant.evaluation.metrics import score_item, summarize
from assistant.evaluation.sets import EvalSet
from knowledge.errors import Cancelled, ConfigError, StoreError
from knowledge.files import atomic_write_bytes, new_id, now
from knowledge.progress import Clock, Progress


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
    """quote, concise or detailed (see assistant.answering.answer.AnswerConfig.style)."""

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


def config_matrix(
    kbs: list[str],
    adapters: list[str],
    top_ks: list[int],
    closed_book: bool = False,
    without_decomposition: bool = False,
    with_escalation: bool = False,
) -> list[EvalConfig]:
    """Every configuration to compare: each knowledge base × adapter ("" is the base model) ×
    top-k; then, for each of those, the variant without decomposition and the one with
    escalation when asked; then each adapter closed book (no retrieval)."""
    if not adapters:
        raise ConfigError("Choose at least one model to evaluate.")
    if not kbs and not closed_book:
        raise ConfigError("Choose a knowledge base to answer from.")
    plain = [
        EvalConfig(kb=kb, adapter=a, top_k=int(k)) for kb in kbs for a in adapters for k in top_ks or [5]
    ]
    configs = list(plain)
    if without_decomposition:
        configs += [replace(c, decompose=False) for c in plain]
    if with_escalation:
        configs += [replace(c, escalate=True) for c in plain]
    if closed_book:
        configs += [EvalConfig(adapter=a, retrieval=False) for a in adapters]
    return configs


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

    def rows(self) -> list[dict]:
        """One row per question: its scores and answer, with the run that produced it."""
        run = {"run": self.id, "set": self.set_name, "model": self.model, "settings": self.config.label()}
        return [{**run, **result} for result in self.results]


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


def run_evaluation(
    app, evalset: EvalSet, config: EvalConfig, cancel: threading.Event | None = None
) -> Generator[Progress, None, EvalRun]:
    """Answer every question of ``evalset`` with ``config`` and score the answers."""
    from assistant.answering.answer import AnswerConfig
    from knowledge.retrieve import RetrievalConfig
    from knowledge.text import strip_citations

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
            if cancel.is_set():  # a stopped answer is not scored
                raise Cancelled(f"Evaluation cancelled after {n} of {total} questions.")
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
        id=new_id(2),
        set_name=evalset.name,
        config=config,
        metrics=summarize(results),
        results=results,
        created=now(),
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
