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
    """Rewrite the snapshot once the changes since it reach this share of its size (and at
    least :attr:`snapshot_min` of them)."""
    snapshot_min: int = 2_000

    def __post_init__(self) -> None:
        if self.approximate_above < 0 or self.probes < 1 or not 0 < self.snapshot_share <= 1:
            raise ConfigError(
                "IndexConfig needs approximate_above ≥ 0, probes ≥ 1 and 0 < snapshot_share ≤ 1."
            )


def build(ids: np.ndarray, vectors: np.ndarray, dim: int, config: IndexConfig):
    """An index of ``vectors`` under ``ids``: flat, or IVF above ``config.approximate_above``."""
    import faiss

    if len(ids) <= config.approximate_above or len(ids) < 1_000:
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


def is_approximate(index) -> bool:
    import faiss

    return isinstance(index, faiss.IndexIVF)


class VectorIndex:
    """The index of one :class:`knowledge.store.KnowledgeBase` (which holds the lock)."""

    def __init__(self, kb, config: IndexConfig | None = None) -> None:
        self.kb = kb
        self.config = config or IndexConfig()
        self.index = None
        self.generation = -1
        self.snapshot_generation = -1

    # ----- reading ----------------------------------------------------------------------

    def current(self):
        """The index at the knowledge base's current generation."""
        generation = self.kb.generation
        if self.index is not None and self.generation == generation:
            return self.index
        log_from = self._log_from()
        if self.index is None or self.generation < log_from:
            self._load_snapshot(log_from)
        if self.index is None:
            self.rebuild()
            return self.index
        self._replay(generation)
        if self.index.ntotal != self.kb.count_chunks():
            self.rebuild()  # a log that does not add up: SQLite decides
        return self.index

    def _log_from(self) -> int:
        return int(self.kb.get_meta("index_log_from", "-1") or -1)

    def _load_snapshot(self, log_from: int) -> None:
        """The newest readable snapshot the log can bring up to date, or none."""
        import faiss

        self.index = None
        for generation, path in sorted(self._snapshots(), reverse=True):
            if generation < log_from or generation > self.kb.generation:
                continue
            try:
                index = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
            except (RuntimeError, OSError):
                continue  # damaged, or just replaced by another process: an older one, or SQLite
            if is_approximate(index):
                index.nprobe = self.config.probes
            self.index, self.generation = index, generation
            self.snapshot_generation = generation
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
        """Apply the log's rows after the index's generation, in the order they were written."""
        rows = self.kb._db.execute(
            "SELECT op, chunk_id FROM index_log WHERE generation > ? AND generation <= ? ORDER BY seq",
            (self.generation, generation),
        ).fetchall()
        pending: list[int] = []

        def flush() -> None:
            if pending:
                ids, vectors = self.kb.vectors_of(pending)
                if len(ids):
                    self.index.add_with_ids(vectors, ids)
                pending.clear()

        for op, chunk_id in rows:
            if op == "add":
                pending.append(int(chunk_id))
            else:
                flush()
                self.index.remove_ids(np.array([int(chunk_id)], dtype=np.int64))
        flush()
        self.generation = generation

    # ----- writing ----------------------------------------------------------------------

    def rebuild(self) -> None:
        """The index from every vector in SQLite, written as the snapshot of this generation."""
        generation = self.kb.generation
        ids, vectors = self.kb.all_vectors()
        self.index = build(ids, vectors, self.kb.dim(), self.config)
        self.generation = generation
        self._write_snapshot()

    def save(self) -> None:
        """Bring the index up to date; rewrite the snapshot only when enough has changed since
        the last one (or the index should change kind)."""
        index = self.current()
        if self.snapshot_generation == self.generation:
            return
        changes = int(
            self.kb._db.execute(
                "SELECT COUNT(*) FROM index_log WHERE generation > ?", (self.snapshot_generation,)
            ).fetchone()[0]
        )
        wants_ivf = index.ntotal > self.config.approximate_above and index.ntotal >= 1_000
        if wants_ivf != is_approximate(index):
            self.rebuild()
        elif changes >= max(self.config.snapshot_min, self.config.snapshot_share * index.ntotal):
            self._write_snapshot()

    def _write_snapshot(self) -> None:
        import faiss

        generation = self.generation
        path = self.kb.folder / f"index-{generation}.faiss"
        atomic_write_bytes(path, faiss.serialize_index(self.index).tobytes())
        self.snapshot_generation = generation
        self.kb.forget_log(generation)
        for old, other in self._snapshots():
            if old < generation:  # a newer one is another process's, and stays
                other.unlink(missing_ok=True)
