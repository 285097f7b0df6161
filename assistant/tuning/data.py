"""Training data for tuning: question/answer files, chat-format JSONL, or a knowledge base's text.

Every source becomes a list of ``Example``: either chat messages (the loss covers the
assistant's turns only) or plain text (continued pre-training, the loss covers every token).
A ``DataReport`` says what was found before any training starts.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from assistant.records import RecordTable, cell_text, clip, read_table
from knowledge.errors import ParseError
from knowledge.limits import IngestLimits

MIN_EXAMPLES = 6
"""Fewest usable examples that can be split into training and validation."""
FEW_EXAMPLES = 20
"""Below this many pairs the report warns that the model may learn little."""


@dataclass(frozen=True)
class Example:
    messages: tuple[tuple[str, str], ...] = ()
    """(role, content) turns; the loss covers the assistant turns."""
    text: str = ""
    """Plain text for continued pre-training (when ``messages`` is empty)."""

    @property
    def question(self) -> str:
        users = [c for r, c in self.messages if r == "user"]
        return users[-1] if users else self.text[:200]

    @property
    def answer(self) -> str:
        answers = [c for r, c in self.messages if r == "assistant"]
        return answers[-1] if answers else ""

    def chat(self, upto_last_answer: bool = False) -> list[dict]:
        turns = list(self.messages)
        if upto_last_answer:
            while turns and turns[-1][0] == "assistant":
                turns.pop()
        return [{"role": r, "content": c} for r, c in turns]


@dataclass
class DataReport:
    source: str
    kind: str
    """pairs, chat or documents."""
    rows: int = 0
    usable: int = 0
    missing: list[int] = field(default_factory=list)
    """Row numbers (1 = first row under the header) with an empty question or answer."""
    duplicates: int = 0
    too_long: int = 0
    """Examples longer than the maximum length: they are cut to fit."""
    max_length: int = 0
    columns: list[str] = field(default_factory=list)
    question_column: str | None = None
    answer_column: str | None = None
    preview: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        out = list(self.notes)
        if self.missing:
            shown = ", ".join(map(str, self.missing[:8])) + (" ..." if len(self.missing) > 8 else "")
            out.append(
                f"{len(self.missing)} rows have an empty question or answer and are skipped (rows {shown})."
            )
        if self.duplicates:
            out.append(f"{self.duplicates} duplicate examples are skipped.")
        if self.too_long:
            out.append(
                f"{self.too_long} examples are longer than {self.max_length} tokens and will be cut to fit."
            )
        if self.kind != "documents" and self.usable < FEW_EXAMPLES:
            out.append(
                f"Only {self.usable} examples: with fewer than about {FEW_EXAMPLES} the model learns little; "
                "add more pairs, or paraphrases of the same questions."
            )
        return out

    def to_json(self) -> dict:
        return {**self.__dict__, "warnings": self.warnings()}


@dataclass
class TrainingData:
    name: str
    examples: list[Example]
    report: DataReport

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        for ex in self.examples:
            digest.update(json.dumps([ex.messages, ex.text], ensure_ascii=False).encode())
        return digest.hexdigest()

    def check(self) -> None:
        if len(self.examples) < MIN_EXAMPLES:
            raise ParseError(
                f"{self.name} has {len(self.examples)} usable examples; tuning needs at least "
                f"{MIN_EXAMPLES} (and works better with 20 or more)."
            )

    def split(
        self, fraction: float = 0.1, minimum: int = 5, seed: int = 0
    ) -> tuple[list[Example], list[Example]]:
        """Shuffle once with ``seed`` and hold out ``fraction`` (at least ``minimum``) for validation.

        At least one example stays for training, however small the set.
        """
        self.check()
        order = list(self.examples)
        random.Random(seed).shuffle(order)
        n_val = max(minimum, round(len(order) * fraction))
        n_val = min(n_val, len(order) - max(1, len(order) // 2))
        return order[n_val:], order[:n_val]


def examples_jsonl(examples: list[Example]) -> bytes:
    """Examples as JSONL that :func:`load_pairs` reads back to the same examples: a
    question/answer pair as its two columns, any other conversation as its ``messages``."""
    lines = []
    for e in examples:
        if [r for r, _ in e.messages] == ["user", "assistant"]:
            record = {"question": e.question, "answer": e.answer}
        else:
            record = {"messages": [{"role": r, "content": c} for r, c in e.messages]}
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return "".join(lines).encode("utf-8")


def load_pairs(
    path: str | Path,
    question_column: str | None = None,
    answer_column: str | None = None,
    data: bytes | None = None,
    name: str | None = None,
    limits: IngestLimits | None = None,
) -> TrainingData:
    """Question/answer pairs from CSV, TSV, XLSX, JSONL or Parquet (columns), or chat-format JSONL,
    read within ``limits`` (see :func:`read_table`)."""
    table = read_table(path, data, name, limits)
    return pairs_from_table(table, question_column, answer_column)


def pairs_from_table(
    table: RecordTable, question_column: str | None = None, answer_column: str | None = None
) -> TrainingData:
    report = DataReport(source=table.name, kind="pairs", columns=list(table.columns))
    examples: list[Example] = []
    seen: set[tuple] = set()
    if table.messages and not table.rows:
        report.kind = "chat"
        for i, msgs in enumerate(table.messages, 1):
            turns = tuple(
                (str(m.get("role", "")), cell_text(m.get("content")))
                for m in msgs
                if isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
            )
            report.rows += 1
            if not any(r == "assistant" and c for r, c in turns) or not any(r == "user" for r, _ in turns):
                report.missing.append(i)
                continue
            if turns in seen:
                report.duplicates += 1
                continue
            seen.add(turns)
            examples.append(Example(messages=turns))
        report.preview = [{"question": clip(e.question), "answer": clip(e.answer)} for e in examples[:5]]
    else:
        q_col = table.column(question_column, "question")
        a_col = table.column(answer_column, "answer")
        if (
            (q_col is None or a_col is None)
            and len(table.columns) == 2
            and not (question_column or answer_column)
        ):
            q_col, a_col = table.columns
            report.notes.append(
                f"Took {q_col!r} as the question column and {a_col!r} as the answer column; "
                "choose the columns if that is wrong."
            )
        if q_col is None or a_col is None:
            missing_role = "question" if q_col is None else "answer"
            raise ParseError(
                f"Could not tell which column of {table.name} holds the {missing_role}s "
                f"(columns: {', '.join(table.columns)}); choose the question and answer columns."
            )
        if q_col == a_col:
            raise ParseError("The question and answer columns must be different columns.")
        report.question_column, report.answer_column = q_col, a_col
        for i, row in enumerate(table.rows, 1):
            report.rows += 1
            question, answer = cell_text(row.get(q_col)), cell_text(row.get(a_col))
            if not question or not answer:
                report.missing.append(i)
                continue
            key = (question, answer)
            if key in seen:
                report.duplicates += 1
                continue
            seen.add(key)
            examples.append(Example(messages=(("user", question), ("assistant", answer))))
        report.preview = [{q_col: clip(e.question), a_col: clip(e.answer)} for e in examples[:5]]
    report.usable = len(examples)
    return TrainingData(table.name, examples, report)


def from_texts(name: str, texts: list[str]) -> TrainingData:
    """Plain passages (a knowledge base's chunks) for continued pre-training."""
    report = DataReport(source=name, kind="documents")
    examples, seen = [], set()
    for text in texts:
        report.rows += 1
        text = text.strip()
        if not text:
            report.missing.append(report.rows)
        elif text in seen:
            report.duplicates += 1
        else:
            seen.add(text)
            examples.append(Example(text=text))
    report.usable = len(examples)
    report.preview = [{"text": clip(e.text)} for e in examples[:5]]
    return TrainingData(name, examples, report)


def from_knowledge_base(kb) -> TrainingData:
    texts = [text for _, _, text in kb.iter_chunk_texts()]
    if not texts:
        raise ParseError(f"The knowledge base {kb.name!r} has no documents yet; add documents first.")
    return from_texts(f"knowledge base {kb.name}", texts)


def from_drafts(drafts, kb: str | None = None) -> TrainingData:
    """Accepted reply drafts (of ``kb``, or all) as question/answer pairs: the customer's message
    and the reply as finally accepted, without citation marks; repeats counted once.

    ``drafts`` is an :class:`assistant.drafting.store.DraftStore`."""
    report = DataReport(source="accepted reply drafts" + (f" ({kb})" if kb else ""), kind="pairs")
    examples, seen = [], set()
    for row in drafts.accepted_rows(kb, limit=100_000):
        report.rows += 1
        pair = (row["question"].strip(), row["answer"])
        if pair in seen:
            report.duplicates += 1
            continue
        seen.add(pair)
        examples.append(Example(messages=(("user", pair[0]), ("assistant", pair[1]))))
    report.usable = len(examples)
    report.preview = [
        {"customer message": clip(e.question), "accepted reply": clip(e.answer)} for e in examples[:5]
    ]
    return TrainingData(report.source, examples, report)
