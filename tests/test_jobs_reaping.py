"""Cancelling background jobs: the worker is reaped (no zombie), and a job busy loading a model
stops within seconds.

The jobs run in real worker processes (``assistant.jobs.worker``) with stand-in handlers: this
module is also the worker's entry point (``python -m tests.test_jobs_reaping``), so a handler
can block as a model load does, without a model.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = "tests.test_jobs_reaping"


def _steps(request, folder, data_dir, cancel):
    """A job that looks at ``cancel`` between short steps, as training does."""
    from knowledge.errors import Cancelled
    from knowledge.progress import Progress

    n = 0
    while not cancel.is_set():
        n += 1
        yield Progress("training", n, 10_000, "steps")
        time.sleep(0.1)
    raise Cancelled("Cancelled between steps.")


def _loading(request, folder, data_dir, cancel):
    """A job stuck in one long call that never looks at ``cancel`` (a model load)."""
    from knowledge.progress import Progress

    yield Progress("loading model", 0, 1, "steps")
    try:
        time.sleep(600)
    finally:
        (folder / "cleaned-up").touch()  # the job's own clean-up still runs
    return {}


def _stuck(request, folder, data_dir, cancel):
    """A job that swallows the interrupt too, with a child process of its own."""
    from knowledge.errors import Cancelled
    from knowledge.progress import Progress

    child = subprocess.Popen(["sleep", "600"])
    (folder / "grandchild").write_text(str(child.pid))
    yield Progress("loading model", 0, 1, "steps")
    while True:
        try:
            time.sleep(600)
        except Cancelled:
            pass


def _state(pid: int) -> str | None:
    """A process's state letter (``Z`` for a zombie), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return None


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while _state(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    return _state(pid) is None


@pytest.fixture
def jobs(tmp_path):
    from assistant.jobs.store import JobStore
    from tests.conftest import stop_jobs

    store = JobStore(tmp_path / "data", worker=WORKER)
    yield store
    stop_jobs(tmp_path / "data")


def _started(jobs, kind: str, stage: str):
    job = jobs.submit(kind, {})
    deadline = time.monotonic() + 120
    while (jobs.get(job.id).progress or {}).get("stage") != stage:
        assert time.monotonic() < deadline and jobs.get(job.id).active, jobs.log_tail(job.id)
        time.sleep(0.2)
    return jobs.get(job.id)


def test_a_cancelled_job_leaves_no_zombie(jobs):
    job = _started(jobs, "steps", "training")
    jobs.cancel(job.id)
    done = jobs.wait(job.id, timeout=30, poll=0.1)
    assert done.state == "cancelled" and done.error == "Cancelled between steps."
    # Nobody looks at the job again: the worker must still be reaped, not left <defunct>.
    assert _gone(job.pid), f"worker {job.pid} is left in state {_state(job.pid)!r}"
    with pytest.raises(ChildProcessError):
        os.waitpid(job.pid, os.WNOHANG)


def test_cancel_while_loading_a_model_takes_effect_within_seconds(jobs):
    from assistant.jobs.worker import CANCEL_GRACE_S

    job = _started(jobs, "loading", "loading model")
    start = time.monotonic()
    jobs.cancel(job.id)
    done = jobs.wait(job.id, timeout=CANCEL_GRACE_S + 15, poll=0.1)
    assert done.state == "cancelled", jobs.log_tail(job.id)
    assert time.monotonic() - start < CANCEL_GRACE_S + 5
    assert "busy" in done.error
    assert (job.folder / "cleaned-up").exists(), "the job's clean-up ran"
    assert _gone(job.pid)


def test_a_job_that_ignores_the_interrupt_is_ended_with_its_children(jobs):
    from assistant.jobs.worker import CANCEL_GRACE_S

    job = _started(jobs, "stuck", "loading model")
    grandchild = int((job.folder / "grandchild").read_text())
    start = time.monotonic()
    jobs.cancel(job.id)
    done = jobs.wait(job.id, timeout=2 * CANCEL_GRACE_S + 15, poll=0.1)
    assert done.state == "cancelled" and "process was ended" in done.error
    assert time.monotonic() - start < 2 * CANCEL_GRACE_S + 5
    assert _gone(job.pid)
    # The worker's own child went with it (whoever reaps orphans here may be slow to do so).
    deadline = time.monotonic() + 10
    while _state(grandchild) not in (None, "Z") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _state(grandchild) in (None, "Z")


if __name__ == "__main__":
    from assistant.jobs import worker

    sys.exit(worker.main(sys.argv[1:], {"steps": _steps, "loading": _loading, "stuck": _stuck}))
