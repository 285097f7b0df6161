"""Limits on what an upload may cost: size, count, pages, archive expansion and parse time.

A server several people share must not be stalled or filled by one file: a 2 GB upload, a
DOCX that unpacks to gigabytes (a zip bomb), or a PDF crafted to make the parser spin. Each
limit refuses the file with one sentence naming the limit and how to change it; the rest of
the batch goes on.

Text extraction runs in a separate process with a time limit: a thread cannot be stopped,
a process can. The process (``knowledge/extractor.py``) is started once and replaced after a
timeout or a crash.
"""

from __future__ import annotations

import atexit
import io
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from knowledge.errors import ConfigError, ParseError


@dataclass(frozen=True)
class IngestLimits:
    max_file_mb: float = 100.0
    """TSUMUGI_MAX_FILE_MB: largest file accepted."""
    max_files: int = 500
    """TSUMUGI_MAX_FILES: most files in one upload."""
    max_pages: int = 2000
    """TSUMUGI_MAX_PAGES: longest PDF accepted, in pages."""
    max_unpacked_mb: float = 500.0
    """TSUMUGI_MAX_UNPACKED_MB: most an Office file (a zip inside) may expand to."""
    max_ratio: float = 200.0
    """Largest compression ratio of one archive member (a zip bomb compresses ~1000:1)."""
    parse_timeout_s: float = 120.0
    """TSUMUGI_PARSE_TIMEOUT: longest text extraction of one file; 0 parses in-process, unlimited."""

    def __post_init__(self) -> None:
        problems = []
        for name in ("max_file_mb", "max_unpacked_mb", "max_ratio"):
            if getattr(self, name) <= 0:
                problems.append(f"`{name}` should be positive, got {getattr(self, name)}.")
        for name in ("max_files", "max_pages"):
            if getattr(self, name) < 1:
                problems.append(f"`{name}` should be at least 1, got {getattr(self, name)}.")
        if self.parse_timeout_s < 0:
            problems.append(f"`parse_timeout_s` should be 0 or more, got {self.parse_timeout_s}.")
        if problems:
            raise ConfigError(" ".join(problems))


def check_size(name: str, size: int, limits: IngestLimits) -> None:
    if size > limits.max_file_mb * 1024 * 1024:
        raise ParseError(
            f"{name} is {size / 1024 / 1024:.0f} MB, over the {limits.max_file_mb:g} MB limit; split it "
            "or ask an admin to raise TSUMUGI_MAX_FILE_MB."
        )


def check_count(count: int, limits: IngestLimits) -> None:
    if count > limits.max_files:
        raise ConfigError(
            f"{count} files are more than the {limits.max_files} allowed in one upload; upload them in "
            "smaller batches (TSUMUGI_MAX_FILES sets the limit)."
        )


def check_archive(data: bytes, name: str, limits: IngestLimits) -> None:
    """Refuse an Office file whose zip would expand beyond the limits (a zip bomb)."""
    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except zipfile.BadZipFile as exc:
        raise ParseError(f"{name} is a damaged Office file; open it and save it again.") from exc
    total = sum(m.file_size for m in members)
    if len(members) > 10_000 or total > limits.max_unpacked_mb * 1024 * 1024:
        raise ParseError(
            f"{name} would expand to {total / 1024 / 1024:.0f} MB in {len(members)} parts, over the "
            f"{limits.max_unpacked_mb:g} MB limit; it may be a zip bomb. Save it again from the original program."
        )
    for m in members:
        if m.file_size > 1024 * 1024 and m.file_size > limits.max_ratio * max(1, m.compress_size):
            raise ParseError(
                f"{name} contains a part that expands {m.file_size / max(1, m.compress_size):.0f} times "
                "(a zip bomb pattern); it was not opened."
            )


class Extractor:
    """One ``python -m knowledge.extractor`` process, started on first use, replaced when it
    runs over its time limit or dies. A plain subprocess rather than multiprocessing: it needs
    no ``if __name__ == "__main__"`` guard in the caller's script, and it exits when its
    parent does (its stdin closes), leaving no orphans after a crash."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        root = str(Path(__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
        }
        return subprocess.Popen(
            [sys.executable, "-m", "knowledge.extractor"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def parse(self, data: bytes, name: str, max_pages: int, timeout: float):
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            request = pickle.dumps((data, name, max_pages), protocol=pickle.HIGHEST_PROTOCOL)
            deadline = time.monotonic() + timeout
            try:
                self._proc.stdin.write(struct.pack("<Q", len(request)) + request)
                self._proc.stdin.flush()
                header = self._read(8, deadline)
                status, value = pickle.loads(self._read(struct.unpack("<Q", header)[0], deadline))
            except TimeoutError:
                self.stop()
                raise ParseError(
                    f"Reading {name} took longer than {timeout:g} s and was stopped; the file may be "
                    "damaged or built to stall readers. Export it again, or ask an admin to raise "
                    "TSUMUGI_PARSE_TIMEOUT."
                ) from None
            except (OSError, EOFError, pickle.UnpicklingError, struct.error):
                self.stop()
                raise ParseError(
                    f"Reading {name} crashed the text extractor (out of memory?); the file was skipped."
                ) from None
        if status != "ok":
            raise ParseError(value)
        return value

    def _read(self, size: int, deadline: float) -> bytes:
        fd = self._proc.stdout.fileno()
        chunks, left = [], size
        while left:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)


_extractor = Extractor()
atexit.register(_extractor.stop)


def parse_limited(data: bytes, name: str, limits: IngestLimits):
    """Parse in the extraction process, stopping it after ``limits.parse_timeout_s``."""
    if limits.parse_timeout_s == 0:
        from knowledge.parse import parse_bytes

        return parse_bytes(data, name, max_pages=limits.max_pages)
    return _extractor.parse(data, name, limits.max_pages, limits.parse_timeout_s)
