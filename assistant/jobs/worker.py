"""The worker process of one background job, run as ``python -m assistant.serving.worker FOLDER
JOB_ID DATA_DIR``: that entry point hands :func:`main` the registry of job handlers, so this
package imports no job and no job imports the service.

It waits for its device's lock (so jobs on one device run one at a time), runs the job's
generator, appends every progress event to ``events.jsonl`` and leaves the final state in
``status.json``. SIGTERM or a ``cancel`` file in the job folder cancels it.

A job notices a cancel between its steps (``cancel.is_set()``). One that does not look within
``CANCEL_GRACE_S`` (it is loading a model, say) is interrupted where it is, as Ctrl-C would
(``Cancelled`` is raised in it, so its clean-up still runs); one still running
``CANCEL_GRACE_S`` after that is ended with its process group.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Generator
from pathlib import Path

from assistant.generation.config import resolve_device
from knowledge.errors import Cancelled, TsumugiError
from knowledge.files import now
from knowledge.progress import Progress, drive_events

CANCEL_GRACE_S = 5.0
"""Seconds a job may take to notice a cancel before it is interrupted, and again before it is killed."""

INTERRUPTED = "Cancelled while the job was busy (loading a model, say); its unfinished work was not saved."
"""What a job interrupted in the middle of a step says, unless its kind has its own sentence."""

Handler = Callable[[dict, Path, Path, threading.Event], Generator[Progress, None, dict]]
"""A job: its request, its folder, the data folder and the cancel event in; progress out, and a
JSON-able result at the end."""


class CancelEvent(threading.Event):
    """The cancel handed to a job: remembers when it was set, and whether the job has looked
    (``is_set()`` returning True is the job's acknowledgement)."""

    def __init__(self) -> None:
        super().__init__()
        self.set_at: float | None = None
        self.noticed = False
        self.interrupted = False

    def set(self) -> None:
        if self.set_at is None:
            self.set_at = time.monotonic()
        super().set()

    def is_set(self) -> bool:
        value = super().is_set()
        self.noticed = self.noticed or value
        return value

    def requested(self) -> bool:
        """Whether a cancel was asked for, without counting as the job having looked."""
        return threading.Event.is_set(self)


def _watch(folder: Path, cancel: CancelEvent, stop: Callable[[], None]) -> None:
    """Turn the cancel file into ``cancel``; interrupt, then end, a job that does not notice it."""
    interrupted = False
    while True:
        if not cancel.requested() and (folder / "cancel").exists():
            cancel.set()
        if cancel.requested() and not cancel.noticed and cancel.set_at is not None:
            waited = time.monotonic() - cancel.set_at
            if waited > 2 * CANCEL_GRACE_S:
                stop()
            elif waited > CANCEL_GRACE_S and not interrupted:
                interrupted = True
                os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.2)


def main(argv: list[str], handlers: dict[str, Handler], interrupted: dict[str, str] | None = None) -> int:
    """Run one job; ``interrupted`` holds, per kind, the sentence for a job cancelled in the
    middle of a step (what was kept and what was not)."""
    from assistant.jobs.store import write_json

    folder, job_id, data_dir = Path(argv[0]), argv[1], Path(argv[2])
    spec = json.loads((folder / "job.json").read_text(encoding="utf-8"))
    status_path = folder / "status.json"
    status = json.loads(status_path.read_text(encoding="utf-8"))
    status["pid"] = os.getpid()
    write_json(status_path, status)

    cancel = CancelEvent()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())

    def interrupt(*_) -> None:
        if cancel.requested() and not cancel.noticed and not cancel.interrupted:
            cancel.interrupted = True  # once: a job that still does not stop is ended by _watch
            raise Cancelled((interrupted or {}).get(spec["kind"], INTERRUPTED))

    signal.signal(signal.SIGUSR1, interrupt)
    events = open(folder / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115
    # The main thread (progress) and the watcher (a forced stop) both write the status.
    writing = threading.RLock()

    def emit(kind: str, **data) -> None:
        with writing:
            events.write(json.dumps({"t": time.time(), "type": kind, **data}, ensure_ascii=False) + "\n")
            events.flush()

    from assistant import events as event_log

    event_log.configure(data_dir)

    def finish(state: str, **extra) -> int:
        cancel.noticed = True  # the job has ended: nothing left to interrupt
        with writing:
            event_log.log("job", id=job_id, state=state, error=extra.get("error"))
            status.update(state=state, finished=now(), **extra)
            write_json(status_path, status)
            emit("state", state=state, **extra)
        print(f"job {job_id}: {state} {extra.get('error', '')}", flush=True)
        return 0 if state == "done" else 1

    def force_stop() -> None:
        writing.acquire()  # held until the end: nothing is written after the final state
        finish("cancelled", error="Cancelled; the job did not stop by itself, so its process was ended.")
        if os.getpgrp() == os.getpid():
            # The worker leads its own process group (see JobStore.submit): end its children too.
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=_watch, args=(folder, cancel, force_stop), daemon=True).start()

    try:
        lock = _wait_for_device(folder, data_dir, spec, status, cancel, emit)
    except Cancelled:
        return finish("cancelled", error="Cancelled before it started.")
    except TsumugiError as exc:
        return finish("failed", error=str(exc))
    request = spec.get("request", {})
    try:
        with writing:
            status.update(state="running", started=now())
            write_json(status_path, status)
        emit("state", state="running")
        handler = handlers.get(spec["kind"])
        if handler is None:
            return finish("failed", error=f"Unknown job kind {spec['kind']!r}.")
        last = [0.0]

        def record(event: Progress) -> None:
            payload = dataclasses.asdict(event)
            tick = time.monotonic()
            # Every event goes to the file, but status.json (read by pollers) at most 2 per second.
            emit("progress", **payload)
            if tick - last[0] > 0.5 or event.done >= event.total:
                with writing:
                    status["progress"] = payload
                    write_json(status_path, status)
                last[0] = tick

        result = drive_events(handler(request, folder, data_dir, cancel), record)
        return finish("done", result=result or {})
    except Cancelled as exc:
        return finish("cancelled", error=str(exc))
    except TsumugiError as exc:
        return finish("failed", error=str(exc))
    except Exception as exc:  # anything else is a bug: keep the traceback in the log
        traceback.print_exc()
        return finish(
            "failed",
            error=f"The job stopped with an internal error ({exc.__class__.__name__}: {exc}); "
            "its log has the details.",
        )
    finally:
        lock.release()
        events.close()


def _wait_for_device(folder: Path, data_dir: Path, spec: dict, status: dict, cancel: CancelEvent, emit):
    """Wait for this job's turn on its device; returns the device lock, held."""
    import filelock

    from assistant.config import Settings, prepare_environment
    from assistant.jobs.store import JobStore

    prepare_environment(Settings())
    device = resolve_device(spec.get("request", {}).get("config", {}).get("device", "auto"))
    lock = filelock.FileLock(str(folder.parent / f"device-{device}.lock"))
    jobs = JobStore(data_dir)
    told = False
    while True:
        if cancel.is_set():
            raise Cancelled("Cancelled before it started.")
        # First come, first served: with a lock alone, whichever waiter polls first would win.
        if not any(j.state == "queued" and j.created_ts < status["created_ts"] for j in jobs.list()):
            try:
                lock.acquire(timeout=1)
                return lock
            except filelock.Timeout:
                pass
        else:
            time.sleep(1)
        if not told:
            message = f"waiting for the job running on {device} to finish"
            emit("progress", stage="queued", done=0, total=1, unit="jobs", message=message)
            told = True
