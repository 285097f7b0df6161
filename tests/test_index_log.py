"""The FAISS index grows with each change instead of being rebuilt: a snapshot file plus a log of
added and removed chunks that SQLite commits with the chunks themselves."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from knowledge.chunk import Chunk, ChunkConfig
from knowledge.store import KnowledgeBase
from knowledge.vectors import IndexConfig, is_approximate

DIM = 16


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def add(kb: KnowledgeBase, name: str, vectors: np.ndarray, replace: int | None = None) -> int:
    data = name.encode() + vectors.tobytes()
    digest = hashlib.sha256(data).hexdigest()
    chunks = [
        Chunk(text=f"{name} part {i}", page=None, headings=(), tokens=3, ordinal=i)
        for i in range(len(vectors))
    ]
    return kb.add_document(name, data, digest, digest, "text", None, chunks, vectors, replace=replace)


def snapshots(kb: KnowledgeBase) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in kb.folder.glob("index-*.faiss")}


def exact(kb: KnowledgeBase, query: np.ndarray, k: int) -> list[int]:
    """The answer from SQLite alone: every stored vector, scored by brute force."""
    ids, vectors = kb.all_vectors()
    return [int(ids[i]) for i in np.argsort(-(vectors @ query), kind="stable")[:k]]


@pytest.fixture
def kb(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb")
    kb.initialise("test-embedder", ChunkConfig())
    rng = np.random.default_rng(1)
    for n in range(5):
        add(kb, f"doc{n}", unit(rng.normal(size=(40, DIM))))
    kb.save_index()
    return kb


def test_adding_and_removing_documents_updates_the_index_without_rewriting_its_file(kb):
    before = snapshots(kb)
    assert len(before) == 1
    rng = np.random.default_rng(2)
    new = unit(rng.normal(size=(30, DIM)))
    doc = add(kb, "new", new)
    kb.save_index()
    kb.delete_document(1)
    assert snapshots(kb) == before  # the same file: nothing was rewritten
    index = kb.index()
    assert index.ntotal == kb.count_chunks() == 4 * 40 + 30
    for query in new[:5]:
        _, found = index.search(query.reshape(1, -1), 5)
        assert found[0].tolist() == exact(kb, query, 5)
    assert kb.documents()[-1].id == doc


def test_a_new_process_replays_the_log_onto_the_old_file(kb, tmp_path):
    before = snapshots(kb)
    rng = np.random.default_rng(3)
    add(kb, "late", unit(rng.normal(size=(25, DIM))))
    kb.delete_document(2)
    # A crash here: SQLite holds the changes and their log; the index file is the old one.
    reopened = KnowledgeBase(kb.folder)
    index = reopened.index()
    assert snapshots(reopened) == before  # replayed, not rebuilt (a rebuild writes a new file)
    assert index.ntotal == reopened.count_chunks()
    for query in unit(rng.normal(size=(10, DIM))):
        _, found = index.search(query.reshape(1, -1), 10)
        assert found[0].tolist() == exact(reopened, query, 10)


def test_reused_chunk_ids_replay_in_order(kb):
    rng = np.random.default_rng(4)
    before = snapshots(kb)
    last = kb.documents()[-1].id
    old_ids = set(kb.vectors_of(list(range(1, 1000)))[0].tolist())
    kb.delete_document(last)  # its chunk ids are the highest, so SQLite hands them out again
    again = unit(rng.normal(size=(40, DIM)))
    add(kb, "reuses-ids", again)
    assert set(kb.vectors_of(list(range(1, 1000)))[0].tolist()) == old_ids  # the same ids
    reopened = KnowledgeBase(kb.folder)
    index = reopened.index()
    assert snapshots(reopened) == before and index.ntotal == reopened.count_chunks()
    for query in again[:5]:
        _, found = index.search(query.reshape(1, -1), 1)
        assert found[0].tolist() == exact(reopened, query, 1)


def test_the_file_is_rewritten_once_enough_has_changed_and_the_log_is_dropped(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb", index=IndexConfig(snapshot_min=50, snapshot_share=0.1))
    kb.initialise("test-embedder", ChunkConfig())
    rng = np.random.default_rng(5)
    add(kb, "first", unit(rng.normal(size=(100, DIM))))
    kb.save_index()
    first = snapshots(kb)
    add(kb, "small", unit(rng.normal(size=(20, DIM))))
    kb.save_index()
    assert snapshots(kb) == first and kb._db.execute("SELECT COUNT(*) FROM index_log").fetchone()[0] == 20
    add(kb, "large", unit(rng.normal(size=(40, DIM))))
    kb.save_index()  # 60 changes since the file: over the 50 asked for
    assert snapshots(kb) != first and len(snapshots(kb)) == 1
    assert kb._db.execute("SELECT COUNT(*) FROM index_log").fetchone()[0] == 0
    assert KnowledgeBase(kb.folder).index().ntotal == 160


def test_above_the_configured_size_the_index_is_approximate_with_high_recall(tmp_path):
    config = IndexConfig(approximate_above=2_000, probes=16)
    kb = KnowledgeBase(tmp_path / "kb", index=config)
    kb.initialise("test-embedder", ChunkConfig())
    rng = np.random.default_rng(6)
    centres = unit(rng.normal(size=(60, DIM)))
    for n in range(6):  # 3,000 vectors around 60 topics
        topic = centres[rng.integers(0, 60, size=500)]
        add(kb, f"big{n}", unit(topic + 0.3 * rng.normal(size=(500, DIM)) / np.sqrt(DIM)))
    kb.save_index()
    index = KnowledgeBase(kb.folder, index=config).index()
    assert is_approximate(index) and index.nprobe == 16
    queries = unit(centres[:30] + 0.2 * rng.normal(size=(30, DIM)) / np.sqrt(DIM))
    _, found = index.search(queries, 10)
    recall = np.mean([len(set(f) & set(exact(kb, q, 10))) / 10 for f, q in zip(found.tolist(), queries)])
    assert recall >= 0.9
    kb.delete_document(1)  # removals reach the approximate index too
    assert kb.index().ntotal == kb.count_chunks() == 2_500


def test_re_embedding_rebuilds_from_sqlite(kb):
    rng = np.random.default_rng(7)
    ids, _ = kb.all_vectors()
    fresh = unit(rng.normal(size=(len(ids), 8)))
    kb.replace_vectors("other-embedder", dict(zip(ids.tolist(), fresh)))
    index = kb.index()
    assert index.d == 8 and index.ntotal == len(ids)
    _, found = index.search(fresh[:1], 1)
    assert found[0, 0] == ids[0]


def test_an_index_made_while_empty_takes_the_first_documents(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb")
    kb.initialise("test-embedder", ChunkConfig())
    kb.save_index()  # a question asked before any upload, or a batch where every file failed
    assert kb.index().ntotal == 0
    vectors = unit(np.random.default_rng(8).normal(size=(12, DIM)))
    add(kb, "first", vectors)
    for opened in (kb, KnowledgeBase(kb.folder)):
        index = opened.index()
        assert index.d == DIM and index.ntotal == 12
        _, found = index.search(vectors[:1], 1)
        assert found[0].tolist() == exact(opened, vectors[0], 1)


def test_two_processes_on_one_folder_see_each_others_changes(kb):
    other = KnowledgeBase(kb.folder, index=IndexConfig(snapshot_min=1, snapshot_share=0.01))
    assert other.index().ntotal == kb.index().ntotal
    rng = np.random.default_rng(9)
    # The other replaces a document by one of the same size and writes a new file, dropping
    # the log this one would have replayed.
    doc = kb.documents()[0]
    fresh = unit(rng.normal(size=(doc.chunks, DIM)))
    add(other, doc.name, fresh, replace=doc.id)
    other.save_index()
    assert other.connection.execute("SELECT COUNT(*) FROM index_log").fetchone()[0] == 0
    index = kb.index()
    assert index.ntotal == kb.count_chunks()
    for query in fresh[:5]:
        _, found = index.search(query.reshape(1, -1), 3)
        assert found[0].tolist() == exact(kb, query, 3)
