"""A knowledge base's FAISS index, kept up to date by its changes, not rebuilt for each.

SQLite stays the source of truth. Every change to the chunks writes, in the same transaction,
one row per chunk added or removed to ``index_log`` (with the generation it made). The index
file ``index-<g>.faiss`` is a snapshot of generation ``g``; the index in memory is that
snapshot with the log's later rows applied: an add reads the chunk's vector from SQLite, a
removal drops the id. So adding a document costs its own chunks, not the knowledge base's
size, and a process killed at any moment leaves a snapshot that is older but whole and a log
that SQLite committed with the chunks: the next load replays it.

The snapshot is rewritten (to a temporary file, then renamed) only once the changes logged
since it reach :attr:`IndexConfig.snapshot_share` of its size, and the log rows it covers are
then dropped. ``meta.index_log_from`` is the generation the log is complete from; a snapshot
or an index in memory older than that (a re-embedding, a knowledge base from before the log)
is rebuilt from SQLite.

Above :attr:`IndexConfig.approximate_above` chunks the snapshot is an IVF index (inverted lists
over k-means cells, ``probes`` searched per query) instead of exact flat search;
``python -m bench --only ingestion`` reports its recall@10 against flat search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from knowledge.errors import ConfigError
from knowledge.files import atomic_write_bytes


@dataclass(frozen=True)
class IndexConfig:
    approximate_above: int = 250_000
    """Chunks above which the snapshot is an IVF index; below, exact search (at 100k chunks of
    384 dimensions exact search takes about 10 ms a query on two cores)."""
    probes: int = 32
    """IVF cells searched per query: more is closer to exact and slower."""
    snapshot_share: float = 0.1
    """Rewrite the snapshot once the changes since it reach this share of its size..."""
    snapshot_min: int = 2_000
    """...and at least this many: small knowledge bases are not rewritten for every document."""

    def __post_init__(self) -> None:
        problems = []
        if self.approximate_above < 0:
            problems.append(f"`approximate_above` should be 0 or more, got {self.approximate_above}.")
        if self.probes < 1:
            problems.append(f"`probes` should be at least 1, got {self.probes}.")
        if not 0 < self.snapshot_share <= 1:
            problems.append(f"`snapshot_share` should be above 0 and at most 1, got {self.snapshot_share}.")
        if self.snapshot_min < 1:
            problems.append(f"`snapshot_min` should be at least 1, got {self.snapshot_min}.")
        if problems:
            raise ConfigError(" ".join(problems))


def build(ids: np.ndarray, vectors: np.ndarray, dim: int, config: IndexConfig):
    """An index of ``vectors`` under ``ids``: flat, or IVF above ``config.approximate_above``."""
    import faiss

    if not wants_approximate(len(ids), config):
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    else:
        cells = max(16, int(4 * math.sqrt(len(ids))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, cells, faiss.METRIC_INNER_PRODUCT)
        # k-means on a sample of at most 64 vectors a cell: the same cells as on all of them,
        # within noise, in a fraction of the time.
        sample = np.random.default_rng(0).choice(len(ids), min(len(ids), 64 * cells), replace=False)
        index.train(np.ascontiguousarray(vectors[np.sort(sample)]))
        index.nprobe = config.probes
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
    return index


def wants_approximate(chunks: int, config: IndexConfig) -> bool:
    """Whether an index of ``chunks`` vectors should be IVF (never below 1,000: too few to cluster)."""
    return chunks > config.approximate_above and chunks >= 1_000


def is_approximate(index) -> bool:
    import faiss

    return isinstance(index, faiss.IndexIVF)


class VectorIndex:
    """The index of one :class:`knowledge.store.KnowledgeBase`, which calls it under its lock
    (searches too: a replay changes the index in place)."""

    def __init__(self, kb, config: IndexConfig | None = None) -> None:
        self.kb = kb
        self.config = config or IndexConfig()
        self.index = None
        self.generation = -1
        self.snapshot_generation = -1

    # ----- the log (in the knowledge base's SQLite) --------------------------------------

    def log(self, op: str, ids: list[int]) -> None:
        """Record chunks added or removed by the transaction under way (its generation bumped)."""
        generation = self.kb.generation
        self.kb.connection.executemany(
            "INSERT INTO index_log(generation, op, chunk_id) VALUES(?, ?, ?)",
            [(generation, op, int(i)) for i in ids],
        )

    def _changes(self, after: int, upto: int) -> list[tuple[str, int]]:
        return self.kb.connection.execute(
            "SELECT op, chunk_id FROM index_log WHERE generation > ? AND generation <= ? ORDER BY seq",
            (after, upto),
        ).fetchall()

    def _count_changes(self, after: int) -> int:
        query = "SELECT COUNT(*) FROM index_log WHERE generation > ?"
        return int(self.kb.connection.execute(query, (after,)).fetchone()[0])

    def _log_from(self) -> int:
        """The generation after which the log holds every change."""
        return int(self.kb.get_meta("index_log_from", "-1") or -1)

    def _forget(self, generation: int) -> None:
        """Drop the log up to ``generation``, which a snapshot now holds."""
        with self.kb.transaction() as db:
            db.execute("DELETE FROM index_log WHERE generation <= ?", (generation,))
            if self._log_from() < generation:
                db.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES('index_log_from', ?)", (str(generation),)
                )

    # ----- reading ----------------------------------------------------------------------

    def current(self):
        """The index at the knowledge base's current generation."""
        stale = False
        # One read transaction: the generation, the log and the vectors all as of one moment,
        # whatever another process commits or prunes meanwhile.
        with self.kb.reading():
            generation = self.kb.generation
            if self.index is not None and self.generation == generation:
                return self.index
            log_from = self._log_from()
            dim = self.kb.dim()
            if self.index is None or self.generation < log_from or self.index.d != dim:
                self._load_snapshot(log_from, generation, dim)
            if self.index is not None:
                self._replay(generation)
            if self.index is None or self.index.ntotal != self.kb.count_chunks():
                self._build(generation)  # no usable file, or a log that does not add up: SQLite decides
                stale = True
        if stale:
            self._write_snapshot(prune=False)  # a search does not wait on SQLite's write lock
        return self.index

    def _load_snapshot(self, log_from: int, generation: int, dim: int) -> None:
        """The newest readable snapshot the log can bring up to ``generation``, or none."""
        import faiss

        self.index = None
        for snapshot, path in sorted(self._snapshots(), reverse=True):
            if not log_from <= snapshot <= generation:
                continue
            try:
                index = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
            except (RuntimeError, OSError):
                continue  # damaged, or just replaced by another process: an older one, or SQLite
            if index.d != dim:
                continue  # written before the first vector set the dimension
            if is_approximate(index):
                index.nprobe = self.config.probes
            self.index, self.generation = index, snapshot
            self.snapshot_generation = snapshot
            return

    def _snapshots(self) -> list[tuple[int, object]]:
        found = []
        for path in self.kb.folder.glob("index-*.faiss"):
            try:
                found.append((int(path.stem.split("-", 1)[1]), path))
            except ValueError:
                continue
        return found

    def _replay(self, generation: int) -> None:
        """Apply the log's rows after the index's generation, in the order they were written;
        runs of adds and of removals go to FAISS together."""
        run: list[int] = []
        kind = ""

        def flush() -> None:
            if kind == "add":
                ids, vectors = self.kb.vectors_of(run)
                if len(ids):
                    self.index.add_with_ids(vectors, ids)
            elif kind == "remove":
                self.index.remove_ids(np.array(run, dtype=np.int64))
            run.clear()

        for op, chunk_id in self._changes(self.generation, generation):
            if op != kind:
                flush()
                kind = op
            run.append(int(chunk_id))
        flush()
        self.generation = generation

    # ----- writing ----------------------------------------------------------------------

    def _build(self, generation: int) -> None:
        ids, vectors = self.kb.all_vectors()
        self.index = build(ids, vectors, self.kb.dim(), self.config)
        self.generation = generation

    def rebuild(self) -> None:
        """The index from every vector in SQLite, written as the snapshot of its generation."""
        with self.kb.reading():
            self._build(self.kb.generation)
        self._write_snapshot()

    def save(self) -> None:
        """Bring the index up to date; rewrite the snapshot only when enough has changed since
        the last one (or the index should change kind)."""
        index = self.current()
        if self.snapshot_generation == self.generation:
            self._prune()  # a snapshot written while reading left its log behind
            return
        if wants_approximate(index.ntotal, self.config) != is_approximate(index):
            self.rebuild()
        elif self._count_changes(self.snapshot_generation) >= max(
            self.config.snapshot_min, self.config.snapshot_share * index.ntotal
        ):
            self._write_snapshot()

    def _write_snapshot(self, prune: bool = True) -> None:
        """Write the index as the snapshot of its generation, then (``prune``) drop the log it
        covers and older snapshots. Best effort: on failure (a full disk) the older snapshot
        and the log still give this index."""
        import faiss

        if self.kb.get_meta("dim") is None:
            return  # nothing stored yet: the first vectors decide the dimension
        path = self.kb.folder / f"index-{self.generation}.faiss"
        try:
            atomic_write_bytes(path, faiss.serialize_index(self.index).tobytes())
        except OSError:
            return
        self.snapshot_generation = self.generation
        if prune:
            self._prune()

    def _prune(self) -> None:
        """Drop the log the snapshot covers, and older snapshots (best effort: a database busy
        with another process's write keeps its log until the next time)."""
        import sqlite3

        generation = self.snapshot_generation
        covered = self.kb.connection.execute(
            "SELECT 1 FROM index_log WHERE generation <= ? LIMIT 1", (generation,)
        ).fetchone()
        if generation < 0 or (covered is None and self._log_from() >= generation):
            return
        try:
            self._forget(generation)
        except sqlite3.OperationalError:
            return
        for old, other in self._snapshots():
            if old < generation:  # a newer one is another process's, and stays
                other.unlink(missing_ok=True)
