"""Reply drafts and answer outcomes, in SQLite under the data directory.

``drafts`` keeps every draft with the agent's decision: accepted (with the text the agent
sent, which becomes tuning data) or rejected (with a reason). ``answers`` records, for every
answer and draft, its confidence and whether it was escalated or marked for review, so the UI
can show what share of questions went to the larger model.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from knowledge.errors import ConfigError, StoreError
from knowledge.files import new_id

SCHEMA = """
CREATE TABLE IF NOT EXISTS drafts (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    decided REAL,
    kb TEXT NOT NULL,
    message TEXT NOT NULL,
    draft TEXT NOT NULL,
    final TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    tone TEXT,
    model TEXT,
    confidence REAL,
    escalated INTEGER NOT NULL DEFAULT 0,
    needs_review INTEGER NOT NULL DEFAULT 0,
    passages TEXT,
    author TEXT,
    decided_by TEXT
);
CREATE INDEX IF NOT EXISTS drafts_status ON drafts(status, kb);
CREATE TABLE IF NOT EXISTS answers (
    ts REAL NOT NULL,
    kb TEXT,
    source TEXT NOT NULL,
    model TEXT,
    confidence REAL,
    escalated INTEGER NOT NULL,
    needs_review INTEGER NOT NULL
);
"""


@dataclass
class Draft:
    id: str
    created: float
    kb: str
    message: str
    draft: str
    status: str
    final: str | None = None
    reason: str | None = None
    tone: str | None = None
    model: str | None = None
    confidence: float | None = None
    escalated: bool = False
    needs_review: bool = False
    passages: list[dict] | None = None
    author: str | None = None
    decided: float | None = None
    decided_by: str | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)


class DraftStore:
    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / "drafts.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as conn:
            conn.executescript(SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(drafts)")}
            if "decided_by" not in columns:  # a store from before authors decided
                conn.execute("ALTER TABLE drafts ADD COLUMN decided_by TEXT")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    # -- drafts ------------------------------------------------------------------------
    def add(self, kb: str, answer, tone: str = "", author: str = "") -> str:
        """Store a finished draft (an :class:`assistant.answering.answer.Answer`) as pending; returns its id."""
        draft_id = new_id()
        with self._conn() as conn:
            conn.execute(
                "INSERT INTO drafts (id, created, kb, message, draft, tone, model, confidence, escalated,"
                " needs_review, passages, author) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    draft_id,
                    time.time(),
                    kb,
                    answer.question,
                    answer.text,
                    tone,
                    answer.model,
                    answer.confidence,
                    int(answer.escalated),
                    int(answer.needs_review),
                    json.dumps([p.to_json() for p in answer.passages], ensure_ascii=False),
                    author,
                ),
            )
        self.record_answer(kb, "draft", answer)
        return draft_id

    def get(self, draft_id: str) -> Draft:
        row = self._conn().execute("SELECT * FROM drafts WHERE id = ?", (draft_id,)).fetchone()
        if row is None:
            raise StoreError(f"There is no draft {draft_id!r}; draft the reply again.")
        return _draft(row)

    def accept(self, draft_id: str, final_text: str, by: str | None = None, admin: bool = True) -> Draft:
        """Store the text the agent sends (edited or not); it becomes tuning data.

        ``by`` is who decides and ``admin`` whether they are an admin: only the draft's author
        or an admin may decide it (see ``_decide``)."""
        final_text = (final_text or "").strip()
        if not final_text:
            raise ConfigError("The reply is empty; write or draft a reply before accepting it.")
        return self._decide(draft_id, "accepted", by, admin, final=final_text)

    def reject(self, draft_id: str, reason: str, by: str | None = None, admin: bool = True) -> Draft:
        reason = (reason or "").strip()
        if not reason:
            raise ConfigError(
                "Say why the draft is rejected (wrong facts, wrong tone, …); it helps the next tuning."
            )
        return self._decide(draft_id, "rejected", by, admin, reason=reason)

    def _decide(
        self,
        draft_id: str,
        status: str,
        by: str | None,
        admin: bool,
        final: str | None = None,
        reason: str | None = None,
    ) -> Draft:
        """Decide a pending draft, once. Its author decides it, or an admin; an anonymous
        visitor (no name) never does, since accepted drafts become tuning data."""
        if not admin and not by:
            raise ConfigError("Only the agent who drafted a reply, or an admin, may decide it; log in first.")
        if not admin and by != self.get(draft_id).author:
            raise ConfigError("Only the agent who drafted this reply, or an admin, may accept or reject it.")
        with self._conn() as conn:
            changed = conn.execute(
                "UPDATE drafts SET status = ?, final = ?, reason = ?, decided = ?, decided_by = ?"
                " WHERE id = ? AND status = 'pending'",
                (status, final, reason, time.time(), by, draft_id),
            ).rowcount
        if not changed:
            raise ConfigError(
                f"This draft was already {self.get(draft_id).status}; draft a new reply to change it."
            )
        return self.get(draft_id)

    def list(self, kb: str | None = None, status: str | None = None, limit: int = 100) -> list[Draft]:
        query, args = "SELECT * FROM drafts WHERE 1=1", []
        if kb:
            query += " AND kb = ?"
            args.append(kb)
        if status:
            query += " AND status = ?"
            args.append(status)
        query += " ORDER BY created DESC LIMIT ?"
        args.append(limit)
        return [_draft(r) for r in self._conn().execute(query, args).fetchall()]

    # -- outcomes ----------------------------------------------------------------------
    def accepted_rows(self, kb: str | None = None, limit: int = 1_000_000) -> list[dict]:
        """The latest ``limit`` accepted drafts (of ``kb``, or all), oldest first: the customer's
        ``question`` and the ``answer`` as sent (without citation marks) first, so the rows
        tune a model as they are (tuning reads them so too), then the draft and who decided it when."""
        from knowledge.text import strip_citations

        rows = []
        for d in reversed(self.list(kb=kb, status="accepted", limit=limit)):
            rows.append(
                {
                    "question": d.message,
                    "answer": strip_citations(d.final or ""),
                    "draft": d.draft,
                    "kb": d.kb,
                    "tone": d.tone or "",
                    "model": d.model or "",
                    "confidence": d.confidence,
                    "author": d.author or "",
                    "decided_by": d.decided_by or "",
                    "created": d.created,
                    "decided": d.decided,
                    "id": d.id,
                }
            )
        return rows

    def record_answer(self, kb: str | None, source: str, answer) -> None:
        if answer.confidence is None:
            return
        with self._conn() as conn:
            conn.execute(
                "INSERT INTO answers VALUES (?,?,?,?,?,?,?)",
                (
                    time.time(),
                    kb,
                    source,
                    answer.model,
                    answer.confidence,
                    int(answer.escalated),
                    int(answer.needs_review),
                ),
            )

    def stats(self, kb: str | None = None) -> dict:
        """Counts of answers (escalated, needing review) and of drafts by status."""
        where, args = ("WHERE kb = ?", [kb]) if kb else ("", [])
        conn = self._conn()
        total, escalated, review = conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM(escalated), 0), COALESCE(SUM(needs_review), 0) FROM answers {where}",
            args,
        ).fetchone()
        by_status = dict(
            conn.execute(f"SELECT status, COUNT(*) FROM drafts {where} GROUP BY status", args).fetchall()
        )
        return {
            "answers": total,
            "escalated": escalated,
            "needs_review": review,
            "escalated_share": escalated / total if total else None,
            "drafts": sum(by_status.values()),
            "accepted": by_status.get("accepted", 0),
            "rejected": by_status.get("rejected", 0),
            "pending": by_status.get("pending", 0),
        }


def _draft(row: sqlite3.Row) -> Draft:
    data = dict(row)
    data["escalated"] = bool(data["escalated"])
    data["needs_review"] = bool(data["needs_review"])
    data["passages"] = json.loads(data["passages"]) if data["passages"] else []
    return Draft(**data)
