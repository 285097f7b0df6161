"""Knowledge bases on disk: add, re-add, delete, restart, re-embed, and a kill mid-ingestion."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from knowledge.errors import StoreError, TsumugiError
from knowledge.ingest import Source, collect_sources, ingest_files, reembed
from knowledge.library import Library
from knowledge.progress import drive_events
from knowledge.retrieve import RetrievalConfig, retrieve
from tests.conftest import CONTOSO, FIXTURES, ROOT, drain


def _ingest(kb, paths):
    events, results = drain(ingest_files(kb, collect_sources(paths)))
    return events, {r.name: r for r in results}


def _consistent(kb) -> None:
    """Every chunk has exactly one vector and every listed document has its chunks."""
    index = kb.index()
    assert index.ntotal == kb.count_chunks()
    ids = {int(i) for i in faiss_ids(index)}
    assert ids == {cid for cid, _, _ in kb.iter_chunk_texts()}
    assert all(d.chunks > 0 for d in kb.documents())


def faiss_ids(index):
    import faiss

    return faiss.vector_to_array(index.id_map)


def test_add_readd_update_delete(library, shared_data):
    kb = library.create("manuals")
    events, results = _ingest(kb, [CONTOSO / "product_info_1.md", CONTOSO / "product_info_2.md"])
    assert {r.status for r in results.values()} == {"added"}
    assert events[-1].done == events[-1].total == 2
    chunks = kb.count_chunks()
    _consistent(kb)

    _, again = _ingest(kb, [CONTOSO / "product_info_1.md"])
    assert again["product_info_1.md"].status == "unchanged"
    assert kb.count_chunks() == chunks and len(kb.documents()) == 2

    # Same text in another encoding and under another name is no new document either.
    text = (CONTOSO / "product_info_2.md").read_text("utf-8")
    copy = library.root.parent / "copy-of-2.md"
    copy.write_bytes(text.encode("utf-16"))
    _, dup = _ingest(kb, [copy])
    assert dup["copy-of-2.md"].status == "unchanged" and "product_info_2.md" in dup["copy-of-2.md"].message

    # The same name with new content replaces the old version.
    changed = library.root.parent / "product_info_1.md"
    changed.write_text("# TrailMaster X4 Tent\n\nThe tent is now sold in bright orange only.\n", "utf-8")
    _, updated = _ingest(kb, [changed])
    assert updated["product_info_1.md"].status == "updated"
    docs = {d.name: d for d in kb.documents()}
    assert docs["product_info_1.md"].chunks == 1
    _consistent(kb)

    kb.delete_document(docs["product_info_2.md"].id)
    assert [d.name for d in kb.documents()] == ["product_info_1.md"]
    _consistent(kb)
    hits = retrieve(kb, "Adventurer Pro Backpack", RetrievalConfig(cutoff=False))
    assert all(h.doc == "product_info_1.md" for h in hits)
    assert len(list((kb.folder / "files").iterdir())) == 1


def test_persists_across_restart(tmp_path, shared_data):
    kb = Library(tmp_path).create("kb")
    _ingest(kb, [CONTOSO / "product_info_3.md"])
    before = retrieve(kb, "What is the warranty?", RetrievalConfig(cutoff=False))
    kb.close()
    reopened = Library(tmp_path).get("kb")
    assert [d.name for d in reopened.documents()] == ["product_info_3.md"]
    after = retrieve(reopened, "What is the warranty?", RetrievalConfig(cutoff=False))
    assert [h.chunk_id for h in after] == [h.chunk_id for h in before]
    # A missing or stale index file is rebuilt from the stored vectors.
    for path in reopened.folder.glob("index-*.faiss"):
        path.unlink()
    third = Library(tmp_path).get("kb")
    assert [h.chunk_id for h in retrieve(third, "What is the warranty?", RetrievalConfig(cutoff=False))] == [
        h.chunk_id for h in before
    ]


def test_bad_files_do_not_stop_the_batch(library, shared_data):
    kb = library.create("fixtures")
    _, results = _ingest(kb, [FIXTURES])
    failed = {n for n, r in results.items() if r.status == "failed"}
    assert failed == {
        "pypdf-libreoffice-writer-password.pdf",
        "unstructured-password.pdf",
        "unstructured-empty.txt",
        "unstructured-fake-text-all-whitespace.txt",
    }
    assert all(results[n].message.endswith(".") for n in failed)
    assert len(kb.documents()) == len(results) - len(failed) - 1  # the two Stanley Cups CSVs share text
    _consistent(kb)


def test_cancel_keeps_committed_files(library, shared_data):
    import threading

    kb = library.create("cancel")
    cancel = threading.Event()
    sources = collect_sources([CONTOSO / f"product_info_{i}.md" for i in range(1, 6)])
    gen = ingest_files(kb, sources, cancel)

    def cancel_after_two(event) -> None:
        if event.stage == "Indexed" and event.done >= 2:
            cancel.set()

    results = drive_events(gen, cancel_after_two)
    statuses = [r.status for r in results]
    assert statuses[:2] == ["added", "added"] and "cancelled" in statuses
    assert len(kb.documents()) == statuses.count("added")
    _consistent(kb)


def test_names_are_checked(library):
    for bad in ["", "../escape", "a/b", ".hidden", "x" * 80]:
        with pytest.raises(TsumugiError):
            library.create(bad)
    library.create("サポート資料")
    library.create("second kb")
    assert library.names() == ["second kb", "サポート資料"]
    with pytest.raises(TsumugiError, match="already exists"):
        library.create("second kb")
    with pytest.raises(StoreError, match="no knowledge base called 'missing'"):
        library.get("missing")
    library.delete("second kb")
    assert library.names() == ["サポート資料"]


def test_reembed_with_another_local_model(library, shared_data, tiny_embedder_dir):
    kb = library.create("switch")
    _ingest(kb, [CONTOSO / "product_info_4.md", CONTOSO / "product_info_5.md"])
    old_dim = kb.index().d
    events, count = drain(reembed(kb, str(tiny_embedder_dir)))
    assert count == kb.count_chunks() and events[-1].done == count
    assert kb.embed_model == str(tiny_embedder_dir)
    index = kb.index()
    assert index.d == 32 != old_dim and index.ntotal == count
    _, vectors = kb.all_vectors()
    assert vectors.shape == (count, 32)  # no vector of the old model is left
    assert retrieve(kb, "tent", RetrievalConfig(cutoff=False))
    # New documents are embedded with the new model.
    _, results = _ingest(kb, [CONTOSO / "product_info_6.md"])
    assert results["product_info_6.md"].status == "added"
    _consistent(kb)


def test_unknown_embedding_model_is_a_clear_error(library):
    kb = library.create("nomodel", embed_model="/nonexistent/model-folder")
    path = library.root.parent / "a.txt"
    path.write_text("hello")
    with pytest.raises(TsumugiError, match="could not be loaded"):
        drain(ingest_files(kb, [Source(path, "a.txt")]))


def test_kill_during_ingestion_leaves_a_consistent_index(tmp_path, shared_data):
    """kill -9 in the middle of a batch: what was committed stays, nothing is half-written."""
    import re

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(1, 21):
        shutil.copy(CONTOSO / f"product_info_{i}.md", folder / f"manual_{i:02d}.md")
    kb = Library(tmp_path / "data").create("big")
    _ingest(kb, [folder / f"manual_{i:02d}.md" for i in range(1, 6)])  # committed before the kill
    kb.close()
    env = dict(os.environ, TSUMUGI_DATA=str(tmp_path / "data"), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistant", "ingest", "--kb", "big", str(folder)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
        text=True,
    )
    deadline = time.monotonic() + 120
    killed_at = None
    for line in proc.stderr:
        match = re.search(r"Embedding: \d+/20 files · (\d+)/(\d+) chunks", line)
        if match and int(match.group(1)) >= 64:
            killed_at = line.strip()
            break
        assert time.monotonic() < deadline, "ingestion did not progress"
    assert killed_at, "the kill came too late: ingestion had finished"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kb = Library(tmp_path / "data").get("big")
    documents = kb.documents()
    assert 5 <= len(documents) < 20, killed_at
    _consistent(kb)
    # Ingesting again finishes the batch without duplicates.
    _, results = _ingest(kb, [folder])
    assert sorted(r.status for r in results.values()).count("unchanged") == len(documents)
    assert len(kb.documents()) == 20
    _consistent(kb)
    assert np.isfinite(kb.all_vectors()[1]).all()


def test_the_same_file_twice_in_one_upload(library, shared_data, tmp_path):
    kb = library.create("twins")
    copy = tmp_path / "copy.md"
    shutil.copy(CONTOSO / "product_info_7.md", copy)
    _, results = _ingest(kb, [CONTOSO / "product_info_7.md", copy])
    assert results["product_info_7.md"].status == "added"
    assert results["copy.md"].status == "unchanged"
    assert "product_info_7.md" in results["copy.md"].message
    assert [d.name for d in kb.documents()] == ["product_info_7.md"]
