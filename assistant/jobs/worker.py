"""The worker process of one background job, run as ``python -m assistant.serving.worker FOLDER
JOB_ID DATA_DIR``: that entry point hands :func:`main` the registry of job handlers, so this
package imports no job and no job imports the service.

It waits for its device's lock (so jobs on one device run one at a time), runs the job's
generator, appends every progress event to ``events.jsonl`` and leaves the final state in
``status.json``. SIGTERM or a ``cancel`` file in the job folder cancels it.
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

Handler = Callable[[dict, Path, Path, threading.Event], Generator[Progress, None, dict]]
"""A job: its request, its folder, the data folder and the cancel event in; progress out, and a
JSON-able result at the end."""


def main(argv: list[str], handlers: dict[str, Handler]) -> int:
    from assistant.jobs.store import write_json

    folder, job_id, data_dir = Path(argv[0]), argv[1], Path(argv[2])
    spec = json.loads((folder / "job.json").read_text(encoding="utf-8"))
    status_path = folder / "status.json"
    status = json.loads(status_path.read_text(encoding="utf-8"))
    status["pid"] = os.getpid()
    write_json(status_path, status)

    cancel = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())

    def watch() -> None:
        while not cancel.is_set():
            if (folder / "cancel").exists():
                cancel.set()
            time.sleep(0.3)

    threading.Thread(target=watch, daemon=True).start()
    events = open(folder / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def emit(kind: str, **data) -> None:
        events.write(json.dumps({"t": time.time(), "type": kind, **data}, ensure_ascii=False) + "\n")
        events.flush()

    from assistant import events as event_log

    event_log.configure(data_dir)

    def finish(state: str, **extra) -> int:
        event_log.log("job", id=job_id, state=state, error=extra.get("error"))
        status.update(state=state, finished=now(), **extra)
        write_json(status_path, status)
        emit("state", state=state, **extra)
        print(f"job {job_id}: {state} {extra.get('error', '')}", flush=True)
        return 0 if state == "done" else 1

    import filelock

    from assistant.config import Settings, prepare_environment

    prepare_environment(Settings())
    request = spec.get("request", {})
    try:
        device = resolve_device(request.get("config", {}).get("device", "auto"))
    except TsumugiError as exc:
        return finish("failed", error=str(exc))
    from assistant.jobs.store import JobStore

    lock = filelock.FileLock(str(folder.parent / f"device-{device}.lock"))
    jobs = JobStore(data_dir)
    told = False
    while True:
        if cancel.is_set():
            return finish("cancelled", error="Cancelled before it started.")
        # First come, first served: with a lock alone, whichever waiter polls first would win.
        if not any(j.state == "queued" and j.created_ts < status["created_ts"] for j in jobs.list()):
            try:
                lock.acquire(timeout=1)
                break
            except filelock.Timeout:
                pass
        else:
            time.sleep(1)
        if not told:
            message = f"waiting for the job running on {device} to finish"
            emit("progress", stage="queued", done=0, total=1, unit="jobs", message=message)
            told = True
    try:
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
