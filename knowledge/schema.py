"""What a knowledge base stores: the SQLite tables, and the rows read back from them."""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 2
"""Bumped, with a migration, whenever the tables below change (2: ``index_log``, created where
missing when a knowledge base is opened, its log starting then)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    text_sha256 TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    pages INTEGER,
    file TEXT,
    added_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks(
    id INTEGER PRIMARY KEY,
    doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    heading TEXT NOT NULL,
    page INTEGER,
    tokens INTEGER NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE INDEX IF NOT EXISTS documents_text ON documents(text_sha256);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(terms, tokenize="unicode61 remove_diacritics 0");
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_vocab USING fts5vocab(chunks_fts, row);
CREATE TABLE IF NOT EXISTS index_log(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    generation INTEGER NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('add', 'remove')),
    chunk_id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS index_log_generation ON index_log(generation);
"""


@dataclass(frozen=True)
class DocumentInfo:
    id: int
    name: str
    sha256: str
    kind: str
    size: int
    pages: int | None
    chunks: int
    added_at: str


@dataclass(frozen=True)
class StoredChunk:
    id: int
    doc_id: int
    doc: str
    text: str
    heading: str
    page: int | None
