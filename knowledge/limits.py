"""Limits on what an upload may cost: size, count, pages, archive expansion, parse time and memory.

A server several people share must not be stalled or filled by one file: a 2 GB upload, a
DOCX that unpacks to gigabytes (a zip bomb), or a PDF crafted to make the parser spin. Each
limit refuses the file with one sentence naming the limit and how to change it; the rest of
the batch goes on.

Text extraction runs in a separate process (``knowledge/extractor.py``) with a time limit,
a memory limit and none of the server's secrets: a thread cannot be stopped, a process can,
and a parser exploit there reaches neither the server's keys nor its interpreter (only JSON
comes back). The process is started once and replaced after a timeout, a crash or running
out of memory.
"""

from __future__ import annotations

import atexit
import io
import os
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from knowledge.errors import ConfigError, ParseError
from knowledge.extractor import decode, document_from_dict, encode


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
    max_parse_memory_mb: int = 4096
    """TSUMUGI_PARSE_MEMORY_MB: address space the extraction process may use to read one file;
    its parsers alone take about 160 MB, a 100 MB CSV of short rows up to 4 GB. 0: unlimited."""
    max_data_mb: float = 50.0
    """TSUMUGI_MAX_DATA_MB: largest tuning or evaluation file (CSV, TSV, XLSX, JSONL) accepted."""

    def __post_init__(self) -> None:
        problems = []
        for name in ("max_file_mb", "max_unpacked_mb", "max_ratio", "max_data_mb"):
            if getattr(self, name) <= 0:
                problems.append(f"`{name}` should be positive, got {getattr(self, name)}.")
        for name in ("max_files", "max_pages"):
            if getattr(self, name) < 1:
                problems.append(f"`{name}` should be at least 1, got {getattr(self, name)}.")
        for name in ("parse_timeout_s", "max_parse_memory_mb"):
            if getattr(self, name) < 0:
                problems.append(f"`{name}` should be 0 or more, got {getattr(self, name)}.")
        if problems:
            raise ConfigError(" ".join(problems))


def check_size(name: str, size: int, limits: IngestLimits) -> None:
    if size > limits.max_file_mb * 1024 * 1024:
        raise ParseError(
            f"{name} is {size / 1024 / 1024:.0f} MB, over the {limits.max_file_mb:g} MB limit; split it "
            "or ask an admin to raise TSUMUGI_MAX_FILE_MB."
        )


def check_data_size(name: str, size: int, limits: IngestLimits) -> None:
    """Refuse a tuning or evaluation file over ``limits.max_data_mb`` (check before reading it)."""
    if size > limits.max_data_mb * 1024 * 1024:
        raise ParseError(
            f"{name} is {size / 1024 / 1024:.0f} MB, over the {limits.max_data_mb:g} MB limit for "
            "tuning and evaluation files; split it or ask an admin to raise TSUMUGI_MAX_DATA_MB."
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


_ENVIRONMENT = {
    "PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "PYTHONPATH",
    "PYTHONHASHSEED", "PYTHONUTF8", "PYTHONIOENCODING", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
    "SYSTEMROOT",
    # Where a Python built with shared libraries finds libpython; without it the child may not start.
    "LD_LIBRARY_PATH",
}  # fmt: skip
"""The variables the extraction process inherits (and ``LC_*``): nothing secret, such as API
keys, tokens or passwords, reaches a parser."""


def child_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The extraction process's environment: the allowed variables of ``environ`` (the
    server's by default), with this project on PYTHONPATH."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if k in _ENVIRONMENT or k.startswith("LC_")}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    # numpy (openpyxl imports it) sizes a BLAS thread pool to the machine, each thread
    # reserving address space the memory limit would count; a parser needs none.
    env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = "1"
    # Not the server's home: a parser has no business near ~/.cache/huggingface/token.
    env["HOME"] = tempfile.gettempdir()
    return env


def _memory_message(name: str, limits: IngestLimits, crashed: bool) -> str:
    allowed = f"the {limits.max_parse_memory_mb} MB allowed to read one file (TSUMUGI_PARSE_MEMORY_MB)"
    if not crashed:
        return f"{name} needs more memory than {allowed}; split it into smaller files or ask an admin to raise it."
    if limits.max_parse_memory_mb == 0:
        return f"Reading {name} crashed the text extractor (out of memory?); the file was skipped."
    return (
        f"Reading {name} stopped the text extractor: the file probably needs more memory than {allowed}, "
        "so split it into smaller files or ask an admin to raise it."
    )


def _is_reply(reply: object) -> bool:
    if not isinstance(reply, dict):
        return False
    if reply.get("status") == "ok":
        return set(reply) == {"status", "value"}
    return (
        reply.get("status") == "error"
        and set(reply) == {"status", "message"}
        and isinstance(reply["message"], str)
    )


class Extractor:
    """One ``python -m knowledge.extractor`` process, started on first use, replaced when it
    runs over its time limit, runs out of memory or dies. A plain subprocess rather than
    multiprocessing: it needs no ``if __name__ == "__main__"`` guard in the caller's script,
    exchanges no pickles, and exits when its parent does (its stdin closes), leaving no
    orphans after a crash. ``command`` replaces the program (tests use a hostile one)."""

    def __init__(self, command: list[str] | None = None) -> None:
        self._command = command or [sys.executable, "-m", "knowledge.extractor"]
        self._proc: subprocess.Popen | None = None
        self._memory_mb: int | None = None
        self._lock = threading.Lock()

    def _start(self, memory_mb: int) -> subprocess.Popen:
        proc = subprocess.Popen(
            [*self._command, "--memory-mb", str(memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=child_environment(),
        )
        os.set_blocking(proc.stdin.fileno(), False)  # writes wait on the deadline, not forever
        return proc

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            for pipe in (self._proc.stdin, self._proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
            self._proc = None

    def request(self, header: dict, data: bytes, limits: IngestLimits) -> object:
        """Send one request (see ``knowledge/extractor.py``) and return the reply's value.

        Raises ParseError with one sentence when the process runs over ``limits.parse_timeout_s``,
        out of memory, dies, answers with an error, or answers with anything but a reply."""
        name = str(header.get("name", "the file"))
        with self._lock:
            memory_mb = limits.max_parse_memory_mb
            if self._proc is None or self._proc.poll() is not None or self._memory_mb != memory_mb:
                self.stop()
                self._proc, self._memory_mb = self._start(memory_mb), memory_mb
            deadline = time.monotonic() + limits.parse_timeout_s
            reply = None
            try:
                head = encode(header)
                for part in (struct.pack("<Q", len(head)), head, struct.pack("<Q", len(data)), data):
                    self._write(part, deadline)
                size = struct.unpack("<Q", self._read(8, deadline))[0]
                if size <= 64 * 2**20 + 16 * len(data):  # no parse makes a file 16 times larger
                    reply = decode(self._read(size, deadline))
            except TimeoutError:
                self.stop()
                raise ParseError(
                    f"Reading {name} took longer than {limits.parse_timeout_s:g} s and was stopped; the file "
                    "may be damaged or built to stall readers. Export it again, or ask an admin to raise "
                    "TSUMUGI_PARSE_TIMEOUT."
                ) from None
            except (OSError, EOFError):
                self.stop()
                raise ParseError(_memory_message(name, limits, crashed=True)) from None
            except (ValueError, RecursionError):
                reply = None
            if reply == {"status": "memory"}:
                self.stop()
                raise ParseError(_memory_message(name, limits, crashed=False))
            if not _is_reply(reply):
                self.stop()
                raise ParseError(
                    f"The text extractor answered with something unreadable while reading {name}; "
                    "the file was skipped."
                )
        if reply["status"] == "error":
            raise ParseError(reply["message"][:1000])
        return reply["value"]

    def _wait(self, fd: int, event: int, deadline: float) -> None:
        poller = select.poll()
        poller.register(fd, event)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            raise TimeoutError

    def _write(self, data: bytes, deadline: float) -> None:
        fd, view = self._proc.stdin.fileno(), memoryview(data)
        while view:
            self._wait(fd, select.POLLOUT, deadline)
            try:
                view = view[os.write(fd, view[: 1 << 20]) :]
            except BlockingIOError:
                continue

    def _read(self, size: int, deadline: float) -> bytes:
        fd = self._proc.stdout.fileno()
        chunks, left = [], size
        while left:
            self._wait(fd, select.POLLIN, deadline)
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)


_extractor = Extractor()
atexit.register(_extractor.stop)


def parse_limited(data: bytes, name: str, limits: IngestLimits):
    """Parse in the extraction process, stopping it after ``limits.parse_timeout_s`` or when it
    needs more than ``limits.max_parse_memory_mb``; returns a ParsedDocument."""
    if limits.parse_timeout_s == 0:
        from knowledge.parse import parse_bytes

        return parse_bytes(data, name, max_pages=limits.max_pages)
    value = _extractor.request({"kind": "parse", "name": name, "max_pages": limits.max_pages}, data, limits)
    try:
        return document_from_dict(value)
    except ValueError:
        _extractor.stop()
        raise ParseError(
            f"The text extractor answered with something unreadable while reading {name}; the file was skipped."
        ) from None


def call_limited(function: str, data: bytes, name: str, limits: IngestLimits) -> object:
    """``function(data, name)`` (``"package.module:function"`` of this project, returning plain
    JSON data) in the extraction process, under the same limits as parsing; in this process
    when ``limits.parse_timeout_s`` is 0. The caller checks the shape of what comes back."""
    from knowledge.extractor import answer

    request = {"kind": "call", "function": function, "name": name}
    if limits.parse_timeout_s == 0:
        return answer(request, data)
    return _extractor.request(request, data, limits)


def extractor_status(limits: IngestLimits) -> dict:
    """What the extraction process sees: the names (never the values) of its environment
    variables, and its memory in use and allowed in MB (``used_mb``, ``limit_mb``)."""
    return _extractor.request({"kind": "status", "name": "status"}, b"", limits)
