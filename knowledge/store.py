"""One knowledge base on disk: documents and chunks in SQLite, vectors in FAISS.

SQLite is the source of truth: it holds each chunk's text, position, BM25 terms (an FTS5
table) and vector. Every change is one SQLite transaction that also bumps ``generation``.
The FAISS index is derived: a snapshot file brought up to date from a log of added and removed
chunks that each transaction writes with its chunks (see :mod:`knowledge.vectors`). So a
process killed at any moment leaves either the old or the new state, never vectors of a
deleted document or chunks without vectors, and never vectors of two embedding models
(changing the model replaces every vector in one transaction).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from knowledge.chunk import Chunk, ChunkConfig, indexed_text
from knowledge.errors import StoreError
from knowledge.files import atomic_write_bytes
from knowledge.lexical import TERMS_VERSION, index_terms, terms
from knowledge.names import document_name, shown_document_name
from knowledge.schema import SCHEMA, SCHEMA_VERSION, DocumentInfo, StoredChunk
from knowledge.vectors import IndexConfig, VectorIndex


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


class KnowledgeBase:
    """A named knowledge base in its own folder. Safe to share between threads."""

    def __init__(self, folder: Path, name: str | None = None, index: IndexConfig | None = None) -> None:
        import filelock

        self.folder = Path(folder)
        self.name = name or self.folder.name
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "files").mkdir(exist_ok=True)
        self._lock = threading.RLock()
        # Serialises writers across processes (the app and the CLI may share a data folder).
        self.write_lock = filelock.FileLock(str(self.folder / ".write.lock"))
        self._local = threading.local()
        try:
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"The knowledge base {self.name!r} could not be opened ({exc}); "
                "restore its folder from a backup or delete it."
            ) from exc
        self.vector_index = VectorIndex(self, index)
        if self.get_meta("index_log_from") is None:
            with self.transaction():  # the log starts now; older index files are not trusted
                self._db.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES('index_log_from', ?)",
                    (str(self.generation),),
                )
                if self.get_meta("schema") is not None:
                    self._set_meta("schema", str(SCHEMA_VERSION))
        self._refresh_terms()

    def _refresh_terms(self) -> None:
        """Re-index BM25 terms written by an older analyser (before Japanese dictionary words
        were indexed), so that stored passages and new questions meet the same terms."""
        if self.get_meta("terms") == str(TERMS_VERSION):
            return
        with self.write_lock, self.transaction():
            if self.get_meta("terms") == str(TERMS_VERSION):
                return  # another process did it while this one waited
            rows = self._db.execute("SELECT id, heading, text FROM chunks").fetchall()
            self._db.executemany(
                "UPDATE chunks_fts SET terms=? WHERE rowid=?",
                [(" ".join(index_terms(indexed_text(h, t))), i) for i, h, t in rows],
            )
            self._set_meta("terms", str(TERMS_VERSION))

    @property
    def connection(self) -> sqlite3.Connection:
        """This thread's connection (for :mod:`knowledge.vectors`, which owns ``index_log``)."""
        return self._db

    @property
    def _db(self) -> sqlite3.Connection:
        """This thread's connection: readers see only committed data, whatever others write."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.folder / "store.sqlite", isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    # ----- metadata -------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    def initialise(self, embed_model: str, chunking: ChunkConfig) -> None:
        """Record settings of a new knowledge base (no-op for an existing one)."""
        with self.transaction():
            if self.get_meta("embed_model") is None:
                self._set_meta("embed_model", embed_model)
                self._set_meta("chunking", json.dumps(chunking.__dict__))
                self._set_meta("created", _now())
                self._set_meta("generation", "0")
                self._set_meta("schema", str(SCHEMA_VERSION))

    @property
    def embed_model(self) -> str:
        value = self.get_meta("embed_model")
        if value is None:
            raise StoreError(f"The knowledge base {self.name!r} has no embedding model recorded.")
        return value

    @property
    def chunking(self) -> ChunkConfig:
        raw = self.get_meta("chunking")
        return ChunkConfig(**json.loads(raw)) if raw else ChunkConfig()

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation", "0") or 0)

    # ----- transactions ---------------------------------------------------------------

    class _Transaction:
        def __init__(self, kb: KnowledgeBase) -> None:
            self.kb = kb

        def __enter__(self):
            self.kb._lock.acquire()
            self.kb._db.execute("BEGIN IMMEDIATE")
            return self.kb._db

        def __exit__(self, exc_type, exc, tb):
            try:
                if exc_type is None:
                    self.kb._db.execute("COMMIT")
                else:
                    self.kb._db.execute("ROLLBACK")
            finally:
                self.kb._lock.release()
            return False

    def transaction(self) -> KnowledgeBase._Transaction:
        return KnowledgeBase._Transaction(self)

    @contextlib.contextmanager
    def reading(self):
        """A read transaction: every query inside sees the same committed state (none is
        opened inside a transaction already under way on this thread)."""
        db = self._db
        if db.in_transaction:
            yield db
            return
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def _bump_generation(self) -> None:
        self._set_meta("generation", str(self.generation + 1))

    # ----- documents ------------------------------------------------------------------

    def find_by_hash(self, sha256: str) -> DocumentInfo | None:
        return next(iter(self._documents("WHERE d.sha256=?", (sha256,))), None)

    def find_by_text_hash(self, text_sha256: str) -> DocumentInfo | None:
        return next(iter(self._documents("WHERE d.text_sha256=?", (text_sha256,))), None)

    def find_by_name(self, name: str) -> DocumentInfo | None:
        """The document called ``name`` (in any Unicode spelling of it), or None."""
        return next(iter(self._documents("WHERE d.name=?", (shown_document_name(name),))), None)

    def documents(self) -> list[DocumentInfo]:
        return self._documents("", ())

    def _documents(self, where: str, args: tuple) -> list[DocumentInfo]:
        rows = self._db.execute(
            "SELECT d.id, d.name, d.sha256, d.kind, d.size, d.pages, "
            "(SELECT COUNT(*) FROM chunks c WHERE c.doc_id=d.id), d.added_at "
            f"FROM documents d {where} ORDER BY d.name COLLATE NOCASE, d.id",
            args,
        ).fetchall()
        return [DocumentInfo(*row) for row in rows]

    def add_document(
        self,
        name: str,
        data: bytes,
        sha256: str,
        text_sha256: str,
        kind: str,
        pages: int | None,
        chunks: list[Chunk],
        vectors: np.ndarray,
        replace: int | None = None,
    ) -> int:
        """Store a parsed, embedded document in one transaction; ``replace`` is an old doc id.

        ``name`` may be a relative path (``teamA/README.md``); it is stored as
        :func:`~knowledge.names.document_name` spells it, and the original's file name is made
        from its last part and the content hash, so no name reaches outside ``files/``."""
        name = document_name(name)
        if len(chunks) != len(vectors):
            raise StoreError("Internal error: the number of chunks and vectors differ.")
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name)[-80:]
        file_name = f"{sha256[:16]}-{safe}"
        # The original is written before the transaction; a crash leaves an unreferenced file,
        # which ``vacuum_files`` removes, never a document without its file.
        atomic_write_bytes(self.folder / "files" / file_name, data)
        with self.transaction() as db:
            self._check_vectors(vectors)
            self._bump_generation()
            if replace is not None:
                self._delete_rows(replace)
            cur = db.execute(
                "INSERT INTO documents(name, sha256, text_sha256, kind, size, pages, file, added_at) "
                "VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                (name, sha256, text_sha256, kind, len(data), pages, file_name, _now()),
            )
            doc_id = int(cur.lastrowid)
            added = []
            for chunk, vector in zip(chunks, vectors):
                cur = db.execute(
                    "INSERT INTO chunks(doc_id, ordinal, text, heading, page, tokens, vector) "
                    "VALUES(?, ?, ?, ?, ?, ?, ?)",
                    (
                        doc_id,
                        chunk.ordinal,
                        chunk.text,
                        chunk.heading,
                        chunk.page,
                        chunk.tokens,
                        vector.astype(np.float32).tobytes(),
                    ),
                )
                db.execute(
                    "INSERT INTO chunks_fts(rowid, terms) VALUES(?, ?)",
                    (cur.lastrowid, " ".join(index_terms(chunk.indexed_text))),
                )
                added.append(cur.lastrowid)
            self.vector_index.log("add", added)
        return doc_id

    def _check_vectors(self, vectors: np.ndarray) -> None:
        dim = self.get_meta("dim")
        if vectors.ndim != 2:
            raise StoreError("Internal error: vectors must be a 2-D array.")
        if dim is not None and vectors.shape[0] and int(dim) != vectors.shape[1]:
            raise StoreError(
                f"Vectors of dimension {vectors.shape[1]} do not match this knowledge base's "
                f"{dim}; its embedding model must be changed through re-embedding."
            )
        if dim is None and vectors.shape[0]:
            self._set_meta("dim", str(vectors.shape[1]))

    def _delete_rows(self, doc_id: int) -> None:
        """Delete a document's rows (in a transaction whose generation is already bumped)."""
        ids = [r[0] for r in self._db.execute("SELECT id FROM chunks WHERE doc_id=?", (doc_id,))]
        self.vector_index.log("remove", ids)
        self._db.execute(
            "DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE doc_id=?)", (doc_id,)
        )
        self._db.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
        self._db.execute("DELETE FROM documents WHERE id=?", (doc_id,))

    def delete_document(self, doc_id: int) -> None:
        """Delete a document, its chunks and its vectors."""
        with self.write_lock, self.transaction():
            row = self._db.execute("SELECT file FROM documents WHERE id=?", (doc_id,)).fetchone()
            if row is None:
                raise StoreError(f"There is no document with id {doc_id} in {self.name!r}.")
            self._bump_generation()
            self._delete_rows(doc_id)
        self.vacuum_files()
        self.save_index()

    def vacuum_files(self) -> None:
        """Remove stored originals no document refers to (left by a crash or a delete)."""
        used = {r[0] for r in self._db.execute("SELECT file FROM documents")}
        for path in (self.folder / "files").iterdir():
            if path.name not in used:
                path.unlink(missing_ok=True)

    # ----- chunks and vectors -----------------------------------------------------------

    def count_chunks(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def chunks_by_id(self, ids: list[int]) -> dict[int, StoredChunk]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(
            "SELECT c.id, c.doc_id, d.name, c.text, c.heading, c.page FROM chunks c "
            f"JOIN documents d ON d.id=c.doc_id WHERE c.id IN ({marks})",
            [int(i) for i in ids],
        ).fetchall()
        return {row[0]: StoredChunk(*row) for row in rows}

    def iter_chunk_texts(self) -> Iterator[tuple[int, str, str]]:
        yield from self._db.execute("SELECT id, heading, text FROM chunks ORDER BY id")

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every chunk's id and vector, in id order."""
        rows = self._db.execute("SELECT id, vector FROM chunks ORDER BY id").fetchall()
        return self._stack(rows)

    def vectors_of(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The ids among ``ids`` that exist, and their vectors."""
        rows = []
        for start in range(0, len(ids), 900):  # SQLite's limit on parameters
            part = [int(i) for i in ids[start : start + 900]]
            marks = ",".join("?" * len(part))
            rows += self._db.execute(f"SELECT id, vector FROM chunks WHERE id IN ({marks})", part).fetchall()
        return self._stack(rows)

    def _stack(self, rows) -> tuple[np.ndarray, np.ndarray]:
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        if not rows:
            return ids, np.zeros((0, self.dim()), dtype=np.float32)
        return ids, np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)

    def dim(self) -> int:
        return int(self.get_meta("dim") or 1)

    def replace_vectors(self, embed_model: str, vectors: dict[int, np.ndarray]) -> None:
        """Swap every vector for one of a new model, in one transaction."""
        with self.transaction() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM chunks")]
            missing = set(ids) - set(vectors)
            if missing:
                raise StoreError(
                    "The knowledge base changed during re-embedding; run the re-embedding again."
                )
            dim = next(iter(vectors.values())).shape[0] if vectors else None
            for chunk_id in ids:
                db.execute(
                    "UPDATE chunks SET vector=? WHERE id=?",
                    (vectors[chunk_id].astype(np.float32).tobytes(), chunk_id),
                )
            self._set_meta("embed_model", embed_model)
            if dim is not None:
                self._set_meta("dim", str(dim))
            self._bump_generation()
            self._set_meta("index_log_from", str(self.generation))  # every vector changed
        self.save_index()

    # ----- FAISS ------------------------------------------------------------------------

    def save_index(self) -> None:
        """Bring the index up to date with SQLite, writing its file when enough has changed."""
        with self._lock:
            self.vector_index.save()

    def index(self):
        """The FAISS index matching the stored chunks (flat, or IVF when large)."""
        with self._lock:
            return self.vector_index.current()

    def dense_search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        with self._lock:  # another thread's replay changes the index in place
            index = self.index()
            if index.ntotal == 0:
                return []
            scores, ids = index.search(vector.reshape(1, -1).astype(np.float32), min(k, index.ntotal))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    # ----- BM25 -------------------------------------------------------------------------

    def lexical_search(
        self,
        query_terms: list[str],
        k: int,
        stats: tuple[int, dict[str, int]] | None = None,
        max_df_ratio: float = 0.05,
    ) -> list[tuple[int, float]]:
        """BM25 through FTS5 (higher is better), over chunks containing any query term.

        Terms found in more than ``max_df_ratio`` of the chunks (and in over 1,000) are left out
        of the match when rarer ones remain: their IDF adds almost nothing to BM25, but every
        chunk containing them has to be scored (at 100k chunks this was most of a query's
        time). Small knowledge bases are never pruned.
        """
        unique = list(dict.fromkeys(t for t in query_terms if t))
        if not unique:
            return []
        if max_df_ratio < 1:
            n, df = stats or self.term_stats(unique)
            limit = max(1000.0, max_df_ratio * n)
            rare = [t for t in unique if df.get(t, 0) <= limit]
            unique = rare or sorted(unique, key=lambda t: df.get(t, 0))[:3]
        expr = " OR ".join('"' + t.replace('"', '""') + '"' for t in unique)
        try:
            rows = self._db.execute(
                "SELECT rowid, -bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ? "
                "ORDER BY bm25(chunks_fts) LIMIT ?",
                (expr, k),
            ).fetchall()
        except sqlite3.OperationalError:
            return []
        return [(int(r[0]), float(r[1])) for r in rows]

    def term_stats(self, query_terms: list[str]) -> tuple[int, dict[str, int]]:
        """The number of chunks and each term's document frequency, read once per query."""
        return self.count_chunks(), self.document_frequencies(query_terms)

    def document_frequencies(self, query_terms: list[str]) -> dict[str, int]:
        unique = list(dict.fromkeys(query_terms))
        if not unique:
            return {}
        marks = ",".join("?" * len(unique))
        rows = self._db.execute(
            f"SELECT term, doc FROM chunks_vocab WHERE term IN ({marks})", unique
        ).fetchall()
        return {term: int(doc) for term, doc in rows}

    def chunk_terms(self, ids: list[int]) -> dict[int, set[str]]:
        """Each chunk's :func:`~knowledge.lexical.terms` (the view coverage compares; BM25's
        index holds more)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(
            f"SELECT id, heading, text FROM chunks WHERE id IN ({marks})", [int(i) for i in ids]
        ).fetchall()
        return {int(i): set(terms(indexed_text(h, t))) for i, h, t in rows}

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
