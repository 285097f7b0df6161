"""Background jobs (training, evaluation) in worker processes, under ``<data>/jobs/<id>/``.

Each job folder holds ``job.json`` (kind and request), ``status.json`` (state, pid, error,
result; replaced atomically), ``events.jsonl`` (one progress event per line) and ``log.txt``
(the worker's output). The worker is a separate process, so a page reload, or a restart of
the app, re-attaches to it by reading its folder; jobs wait for a per-device lock, so one
job trains per device at a time and the others queue.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from knowledge.errors import StoreError
from knowledge.files import atomic_write_bytes, new_id, now

ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled", "interrupted")
ROOT = Path(__file__).resolve().parents[2]
STARTUP_GRACE_S = 120
"""A job whose worker has not written its pid yet counts as starting for this long."""
FORCE_STOP_S = 30
"""A worker still running this long after a cancel is killed by whoever looks at its job (its
own watcher interrupts it after 5 s and ends it after 10; this covers a worker too stuck for that)."""


@dataclass
class Job:
    id: str
    kind: str
    folder: Path
    request: dict
    state: str = "queued"
    created: str = ""
    started: str = ""
    finished: str = ""
    pid: int = 0
    error: str = ""
    result: dict = field(default_factory=dict)
    progress: dict = field(default_factory=dict)
    """The latest progress event."""
    created_ts: float = 0.0

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def title(self) -> str:
        name = self.request.get("name") or self.request.get("set") or ""
        return f"{self.id} · {self.kind} {name} · {self.state}"


def write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8"))


def pid_alive(pid: int, job_id: str) -> bool:
    """True while process ``pid`` runs this job (not a zombie, not a reused pid)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="ignore") as fh:
            if fh.read().rsplit(")", 1)[-1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return job_id.encode() in fh.read()
    except OSError:
        return False


class JobStore:
    def __init__(self, data_dir: str | Path, worker: str = "assistant.serving.worker") -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        self.worker = worker
        """The module run as ``python -m WORKER FOLDER JOB_ID DATA_DIR`` for each job."""
        self._children: dict[str, subprocess.Popen] = {}
        self._reaped: set[str] = set()

    # -- creating and controlling jobs -----------------------------------------------
    def submit(self, kind: str, request: dict, files: dict[str, bytes] | None = None) -> Job:
        """Create the job folder and start its worker; returns at once."""
        job_id = new_id()
        folder = self.root / job_id
        folder.mkdir(parents=True)
        for name, data in (files or {}).items():
            atomic_write_bytes(folder / name, data)
        write_json(folder / "job.json", {"id": job_id, "kind": kind, "request": request})
        # The worker adds its pid as it starts; until then the job counts as starting.
        write_json(folder / "status.json", {"state": "queued", "created": now(), "created_ts": time.time()})
        log = open(folder / "log.txt", "ab")  # noqa: SIM115 - handed to the child
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        )
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                self.worker,
                str(folder.resolve()),
                job_id,
                str(self.data_dir.resolve()),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(ROOT),
            env=env,
            start_new_session=True,  # survives the app being restarted, and Ctrl-C in a terminal
        )
        log.close()
        self._children[job_id] = child
        # Reap the worker the moment it exits, whoever looks at the job (or nobody): a finished
        # child that is never waited for stays a <defunct> zombie as long as this process lives.
        threading.Thread(target=child.wait, name=f"reap-{job_id}", daemon=True).start()
        return self.get(job_id)

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if not job.active:
            return job
        (job.folder / "cancel").touch()
        if job.pid and pid_alive(job.pid, job.id):
            try:
                os.kill(job.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        return job

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.5) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if not job.active or (deadline is not None and time.monotonic() > deadline):
                return job
            time.sleep(poll)

    # -- reading jobs ------------------------------------------------------------------
    def _read_status(self, folder: Path) -> dict:
        try:
            return json.loads((folder / "status.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def get(self, job_id: str) -> Job:
        folder = self.root / job_id
        if not job_id or "/" in job_id or not (folder / "job.json").exists():
            raise StoreError(f"There is no job {job_id!r}.")
        for child_id, child in list(self._children.items()):
            if child.poll() is not None:  # reap finished workers
                del self._children[child_id]
                self._reaped.add(child_id)
        spec = json.loads((folder / "job.json").read_text(encoding="utf-8"))
        status = self._read_status(folder)
        job = Job(
            id=job_id,
            kind=spec["kind"],
            folder=folder,
            request=spec.get("request", {}),
            **{k: v for k, v in status.items() if k in Job.__dataclass_fields__ and k not in ("id", "kind")},
        )
        if job.active and self._overdue(job):
            return self._force_stop(job, status)
        starting = (
            not job.pid
            and job_id not in self._reaped
            and time.time() - float(status.get("created_ts", 0)) < STARTUP_GRACE_S
        )
        if job.active and not starting and not pid_alive(job.pid, job.id) and job_id not in self._children:
            # The worker died without saying so (killed, power cut): mark it, once.
            job.state, job.finished = "interrupted", now()
            job.error = job.error or "The job stopped unexpectedly (the process was killed); start it again."
            write_json(
                folder / "status.json",
                {**status, "state": job.state, "finished": job.finished, "error": job.error},
            )
        return job

    def _overdue(self, job: Job) -> bool:
        """Cancelled over ``FORCE_STOP_S`` ago and still running: its worker is stuck."""
        try:
            asked = (job.folder / "cancel").stat().st_mtime
        except OSError:
            return False
        return time.time() - asked > FORCE_STOP_S and pid_alive(job.pid, job.id)

    def _force_stop(self, job: Job, status: dict) -> Job:
        try:
            os.killpg(job.pid, signal.SIGKILL)  # the worker leads its own process group
        except (ProcessLookupError, PermissionError):
            pass
        child = self._children.pop(job.id, None)
        if child is not None:
            child.wait(timeout=10)
        job.state, job.finished = "cancelled", now()
        job.error = "Cancelled; the job did not stop by itself, so its process was ended."
        write_json(
            job.folder / "status.json",
            {**status, "state": job.state, "finished": job.finished, "error": job.error},
        )
        return job

    def list(self, kind: str | None = None, limit: int = 50) -> list[Job]:
        jobs = []
        for folder in sorted(self.root.iterdir(), reverse=True):
            if not (folder / "job.json").exists():
                continue
            try:
                job = self.get(folder.name)
            except (StoreError, json.JSONDecodeError, KeyError):
                continue
            if kind is None or job.kind == kind:
                jobs.append(job)
            if len(jobs) >= limit:
                break
        return jobs

    def active_ids(self) -> set[str]:
        return {j.id for j in self.list() if j.active}

    def events(self, job_id: str, offset: int = 0) -> tuple[list[dict], int]:
        """Events appended since byte ``offset``, and the offset to read from next time."""
        path = self.root / job_id / "events.jsonl"
        if not path.exists():
            return [], offset
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        events = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
        return events, offset + end

    def log_tail(self, job_id: str, chars: int = 4000) -> str:
        path = self.root / job_id / "log.txt"
        if not path.exists():
            return ""
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - chars))
            return fh.read().decode("utf-8", errors="replace")
