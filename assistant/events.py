"""Structured logs: one JSON object per line in ``<data>/logs/events.jsonl``.

Kinds: ``request`` (HTTP API), ``action`` (a web-app handler: who, what, how long, outcome),
``answer`` (confidence, escalation, timings; never the question's text), ``ingest`` (one per
file), ``job`` (submitted, finished), ``error``. The app, the CLI and the worker processes
append to the same file; each line is written with one ``write`` on a file opened for
appending, so lines from several processes do not interleave. The file is rotated at 10 MB
(five old files kept).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from pathlib import Path

MAX_BYTES = 10 * 1024 * 1024
KEEP = 5

_lock = threading.Lock()
_folder: Path | None = None


def configure(data_dir: str | Path) -> Path:
    """Send events to ``<data_dir>/logs``; returns the log file's path."""
    global _folder
    folder = Path(data_dir) / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    _folder = folder
    return folder / "events.jsonl"


def log(kind: str, **fields) -> None:
    """Append one event; never raises (a full disk must not break answering)."""
    if _folder is None:
        return
    record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "kind": kind, "pid": os.getpid(), **fields}
    line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
    path = _folder / "events.jsonl"
    try:
        with _lock:
            if path.exists() and path.stat().st_size > MAX_BYTES:
                _rotate(path)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line.encode("utf-8"))
            finally:
                os.close(fd)
    except OSError:
        pass


def _rotate(path: Path) -> None:
    for n in range(KEEP - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
    os.replace(path, path.with_name(f"{path.name}.1"))


def recent(data_dir: str | Path, kinds: tuple[str, ...] = (), limit: int = 50) -> list[dict]:
    """The latest events (newest last), optionally of some kinds only."""
    path = Path(data_dir) / "logs" / "events.jsonl"
    if not path.exists():
        return []
    out: deque[dict] = deque(maxlen=limit)
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if not kinds or event.get("kind") in kinds:
                out.append(event)
    return list(out)
