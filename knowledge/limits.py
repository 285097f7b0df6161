"""Limits on what an upload may cost: size, count, pages, archive expansion and parse time.

A server several people share must not be stalled or filled by one file: a 2 GB upload, a
DOCX that unpacks to gigabytes (a zip bomb), or a PDF crafted to make the parser spin. Each
limit refuses the file with one sentence naming the limit and how to change it; the rest of
the batch goes on.

Text extraction runs in a separate process with a time limit: a thread cannot be stopped,
a process can. The process is started once (forkserver, so it does not inherit the app's
threads or models) and replaced after a timeout.
"""

from __future__ import annotations

import io
import multiprocessing
import threading
import zipfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

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


_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def _get_pool() -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("forkserver"))
        return _pool


def _reset_pool() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None:
            for process in list(getattr(_pool, "_processes", {}).values()):
                process.kill()
            _pool.shutdown(wait=False, cancel_futures=True)
            _pool = None


def _parse(data: bytes, name: str, max_pages: int):
    from knowledge.parse import parse_bytes

    return parse_bytes(data, name, max_pages=max_pages)


def parse_limited(data: bytes, name: str, limits: IngestLimits):
    """Parse in the extraction process, stopping it after ``limits.parse_timeout_s``."""
    if limits.parse_timeout_s == 0:
        return _parse(data, name, limits.max_pages)
    future = _get_pool().submit(_parse, data, name, limits.max_pages)
    try:
        return future.result(timeout=limits.parse_timeout_s)
    except FutureTimeout:
        _reset_pool()
        raise ParseError(
            f"Reading {name} took longer than {limits.parse_timeout_s:g} s and was stopped; the file may "
            "be damaged or built to stall readers. Export it again, or ask an admin to raise "
            "TSUMUGI_PARSE_TIMEOUT."
        ) from None
    except BrokenProcessPool:
        _reset_pool()
        raise ParseError(
            f"Reading {name} crashed the text extractor (out of memory?); the file was skipped."
        ) from None
