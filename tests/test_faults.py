"""Fault injection: kill -9 during ingestion and during training, concurrent uploads, a full
disk, and the Space start-up (demo data, temporary storage)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from knowledge.ingest import Source, collect_sources, ingest_files
from knowledge.library import Library
from tests.conftest import CONTOSO, ROOT, drain, stop_jobs


def _corpus(folder: Path, copies: int) -> list[Path]:
    """``copies`` distinct versions of each contoso manual (different text, so none is a duplicate)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(copies):
        for src in sorted(CONTOSO.glob("*.md")):
            path = folder / f"{src.stem}-v{n}.md"
            path.write_text(src.read_text("utf-8") + f"\n\nRevision {n} of {src.stem}.\n", encoding="utf-8")
            paths.append(path)
    return paths


def _check_consistent(kb) -> int:
    """Every listed document has its chunks and its file; the index matches SQLite; search works."""
    docs = kb.documents()
    for doc in docs:
        assert doc.chunks > 0, doc
    rows = kb._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    assert kb.index().ntotal == rows
    files = {p.name for p in (kb.folder / "files").iterdir() if not p.name.startswith(".")}
    stored = {r[0] for r in kb._db.execute("SELECT file FROM documents")}
    assert stored <= files
    if docs:
        from knowledge.retrieve import RetrievalConfig, retrieve

        assert retrieve(kb, "tent warranty", RetrievalConfig(cutoff=False))
    return len(docs)


@pytest.mark.slow
def test_kill_9_during_ingestion_loses_nothing_committed(tmp_path, embedder):
    data = tmp_path / "data"
    # 120 files: more chunks than one embedding group (1,024), so the first files are committed
    # while the rest are still being embedded.
    paths = _corpus(tmp_path / "docs", copies=6)
    env = {**os.environ, "TSUMUGI_DATA": str(data), "TSUMUGI_PARSE_TIMEOUT": "60"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistant", "ingest", "--kb", "big", *map(str, paths)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = data / "kbs" / "big" / "store.sqlite"
    deadline = time.time() + 240
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        if store.exists():
            try:
                with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1) as db:
                    committed = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
            except sqlite3.Error:
                committed = 0
        if committed >= 5:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "ingestion finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    kb = Library(data).get("big")
    kept = _check_consistent(kb)
    assert 5 <= kept < len(paths)
    # Running the same upload again stores the rest and leaves the first ones unchanged.
    _, results = drain(ingest_files(kb, collect_sources(paths)))
    statuses = [r.status for r in results]
    assert statuses.count("unchanged") == kept and statuses.count("added") == len(paths) - kept
    assert _check_consistent(kb) == len(paths)


@pytest.mark.slow
def test_concurrent_uploads_to_one_knowledge_base_are_serialised(tmp_path, embedder):
    data = tmp_path / "data"
    paths = _corpus(tmp_path / "docs", copies=2)
    library = Library(data)
    library.create("shared")
    groups = [paths[i::4] for i in range(4)]
    errors = []

    def upload(group):
        try:
            # Each client has its own Library (as separate processes would) on the same folder.
            kb = Library(data).get("shared")
            drain(ingest_files(kb, [Source(p, p.name) for p in group]))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(g,)) for g in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    kb = Library(data).get("shared")
    assert _check_consistent(kb) == len(paths)


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MB tmpfs: a data folder on a disk that fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here ({result.stderr.decode().strip()}); needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_gives_a_clear_error_and_keeps_the_knowledge_base(small_disk, tmp_path, embedder):
    kb = Library(small_disk / "data").create("tight")
    first = CONTOSO / "product_info_1.md"
    assert drain(ingest_files(kb, [Source(first, first.name)]))[1][0].status == "added"
    # Fill the disk, leaving a few kilobytes.
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / "filler").write_bytes(b"\0" * max(0, free - 16 * 1024))
    big = tmp_path / "big.md"
    big.write_text(
        "# Big\n\n" + "\n\n".join(f"Paragraph {n}: " + "tents and stoves " * 40 for n in range(400))
    )
    results = drain(ingest_files(kb, [Source(big, big.name), Source(first, "copy.md")]))[1]
    assert results[0].status == "failed" and "disk holding the data folder is full" in results[0].message
    (small_disk / "filler").unlink()
    kb = Library(small_disk / "data").get("tight")
    assert [d.name for d in kb.documents()] == ["product_info_1.md"]
    assert _check_consistent(kb) == 1
    assert not [p for p in (kb.folder / "files").iterdir() if ".tmp-" in p.name], "no half-written file left"
    # With room again, the same upload works.
    assert drain(ingest_files(kb, [Source(big, big.name)]))[1][0].status == "added"


@pytest.mark.slow
def test_server_killed_during_training_then_restarted(tmp_path, model_cache):
    """kill -9 of the app while a tuning job runs: the job (its own process) goes on and the
    restarted app follows it; cancelled then, it leaves no adapter or staging folder."""
    from assistant.config import Settings
    from assistant.jobs.store import JobStore
    from assistant.serving.service import Tsumugi

    data = tmp_path / "data"
    script = (
        "import sys, time\n"
        "from assistant.config import Settings\n"
        "from assistant.serving.service import Tsumugi\n"
        "from assistant.tuning.train import TuneConfig\n"
        f"app = Tsumugi(Settings(data_dir={str(data)!r}, model_cache={str(model_cache)!r}))\n"
        "job = app.start_tune('kumo', {'kind': 'file', 'path': sys.argv[1]}, TuneConfig.from_preset('quick', epochs=1))\n"
        "print(job.id, flush=True)\n"
        "time.sleep(600)\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", script, str(ROOT / "tests" / "data" / "tune" / "kumo-lantern-qa.csv")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        job_id = server.stdout.readline().strip()
        jobs = JobStore(data)
        deadline = time.time() + 120
        while jobs.get(job_id).state != "running" and time.time() < deadline:
            time.sleep(0.5)
        os.kill(server.pid, signal.SIGKILL)
        server.wait()

        app = Tsumugi(Settings(data_dir=data, model_cache=model_cache))
        job = app.jobs.get(job_id)
        assert job.state in ("running", "done"), job.state
        # The restarted app re-attaches: the job's progress keeps arriving.
        deadline = time.time() + 300
        while (app.jobs.get(job_id).progress or {}).get("stage") != "training" and time.time() < deadline:
            time.sleep(1)
        assert app.jobs.get(job_id).state == "running"
        # Finishing is covered by tests/test_tune.py; cancelling now must leave nothing half-written.
        app.jobs.cancel(job_id)
        assert app.jobs.wait(job_id, timeout=120).state == "cancelled"
        assert "kumo" not in app.adapters.names()
        assert not [p for p in (data / "adapters").glob(".tmp-*")]
    finally:
        if server.poll() is None:
            server.kill()
        stop_jobs(data)


def test_space_start_seeds_a_demo_and_warns_about_temporary_storage(tmp_path, model_cache):
    import httpx

    from tests.conftest import free_port

    port = free_port()
    env = {
        **os.environ,
        "SPACE_ID": "tsumugi/demo",
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "TSUMUGI_PORT": str(port),
        "TSUMUGI_DATA": str(tmp_path / "data"),
        "TSUMUGI_MODEL_CACHE": str(model_cache),
    }
    proc = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 180
        config = None
        while time.time() < deadline and proc.poll() is None:
            try:
                config = httpx.get(f"http://127.0.0.1:{port}/config", timeout=2).text
                break
            except httpx.HTTPError:
                time.sleep(1)
        assert config is not None, proc.stdout.read() if proc.poll() is not None else "no answer"
        assert "Temporary storage" in config
        assert "Outdoor gear sample" in config
        assert Library(tmp_path / "data").get("Outdoor gear sample").documents()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
