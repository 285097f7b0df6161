"""Evaluation sets, kept per knowledge base: questions with expected answers, an optional
source document and an optional "unanswerable" mark; read from CSV, JSONL or XLSX, or drafted
by the model from the knowledge base's passages for a person to correct.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from assistant.datasets_io import load_table
from assistant.records import RecordTable, read_table, truthy
from knowledge.errors import Cancelled, ParseError, StoreError
from knowledge.files import atomic_write_bytes
from knowledge.library import check_name
from knowledge.limits import IngestLimits
from knowledge.progress import Clock, Progress


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

    def rows(self) -> list[dict]:
        """One row per question, in columns this module reads back (see ROLE_NAMES)."""
        return [asdict(i) for i in self.items]


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


def load_eval_set(
    path: str | Path,
    name: str | None = None,
    data: bytes | None = None,
    limits: IngestLimits | None = None,
    split: str | None = None,
    subset: str | None = None,
    allow_downloads: bool = False,
) -> EvalSet:
    """A set from a file, a saved dataset folder or a hub dataset (its ``split`` and
    ``subset``); named after it (made into a usable name) unless ``name`` is given.

    A file is read within ``limits`` (size, zip bombs, time and memory; see
    :func:`assistant.records.read_table`)."""
    if data is None:
        table = load_table(path, split, subset, limits, allow_downloads)
    else:
        table = read_table(path, data, limits=limits)
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
