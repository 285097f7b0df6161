"""Files that survive a crash: atomic writes, small JSON objects, and ids for stored things."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from pathlib import Path

from knowledge.errors import StoreError


def now() -> str:
    """Local time as stored in records: ``2026-11-23 14:05:09``."""
    return time.strftime("%Y-%m-%d %H:%M:%S")


def new_id(random_bytes: int = 3) -> str:
    """An id that sorts by creation time and does not collide: ``20261123-140509-a1b2c3``."""
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(random_bytes)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, flush it to disk, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise


class JsonFile:
    """A small JSON object on disk (users, API keys), written atomically."""

    def __init__(self, path: Path, damaged: str) -> None:
        self.path = path
        self.damaged = damaged
        """The sentence for a file that no longer parses (says what to do)."""

    def load(self) -> dict:
        if not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text("utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(self.damaged) from exc

    def save(self, data: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, json.dumps(data, indent=2).encode("utf-8"))
