"""The text-extraction process: ``python -m knowledge.extractor [--memory-mb N]``.

Parsers run here, apart from the server, because a crafted file can make one spin, swallow
memory or worse. Only plain data crosses the pipe, never pickles: a parser exploit in this
process must not become code execution in the server, so the server reads nothing from here
but JSON, converted to its own types field by field (:func:`document_from_dict`).

Every message is a frame: an 8-byte little-endian length, then that many bytes. A request is
two frames, a JSON header then the file's raw bytes; the header's ``kind`` is

- ``parse``: ``{"name", "max_pages"}``, answered with :func:`document_to_dict`'s dict;
- ``call``: ``{"function": "package.module:function", "name"}``, answered with what
  ``function(data, name)`` returns (plain JSON data; readers of tables use it);
- ``status``: the names (not values) of this process's environment variables and its
  memory in use and allowed, for checks.

A reply is one JSON frame: ``{"status": "ok", "value": ...}``, ``{"status": "error",
"message": sentence}`` or ``{"status": "memory"}``. The process exits when stdin closes, so
it never outlives the process that started it.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import struct
import sys
from typing import get_args

from knowledge.parse.base import Block, BlockKind, ParsedDocument

_FUNCTION = re.compile(r"^(?:assistant|knowledge)(?:\.\w+)+:\w+$")
"""What a ``call`` may name: a function of this project, never a builtin or another package."""
_BLOCK_KINDS = frozenset(get_args(BlockKind))


def encode(value: object) -> bytes:
    """``value`` as one JSON frame's payload (lone surrogates from odd files survive the trip)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def decode(payload: bytes) -> object:
    """A JSON frame's payload as plain data; raises ValueError when it is not JSON."""
    return json.loads(payload.decode("utf-8", "surrogatepass"))


def frame(payload: bytes) -> bytes:
    return struct.pack("<Q", len(payload)) + payload


def document_to_dict(doc: ParsedDocument) -> dict:
    return {
        "name": doc.name,
        "kind": doc.kind,
        "pages": doc.pages,
        "encoding": doc.encoding,
        "blocks": [
            {"text": b.text, "kind": b.kind, "page": b.page, "headings": list(b.headings)} for b in doc.blocks
        ],
    }


def _field(value: object, expected: type | tuple[type, ...], where: str) -> object:
    # bool is an int in Python; a page number of True is not a page number.
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        raise ValueError(f"{where} is {type(value).__name__}")
    return value


def _keys(value: object, keys: set[str], where: str) -> dict:
    if not isinstance(value, dict) or set(value) != keys:
        raise ValueError(f"{where} does not have exactly the fields {sorted(keys)}")
    return value


def document_from_dict(value: object) -> ParsedDocument:
    """Rebuild a ParsedDocument from :func:`document_to_dict`'s dict, accepting nothing else:
    exactly its fields, each of its type. Raises ValueError otherwise."""
    value = _keys(value, {"name", "kind", "pages", "encoding", "blocks"}, "the document")
    blocks = []
    for n, raw in enumerate(_field(value["blocks"], list, "blocks")):
        raw = _keys(raw, {"text", "kind", "page", "headings"}, f"block {n}")
        if raw["kind"] not in _BLOCK_KINDS:
            raise ValueError(f"block {n} has the kind {raw['kind']!r}")
        headings = _field(raw["headings"], list, f"block {n} headings")
        blocks.append(
            Block(
                text=_field(raw["text"], str, f"block {n} text"),
                kind=raw["kind"],
                page=_field(raw["page"], (int, type(None)), f"block {n} page"),
                headings=tuple(_field(h, str, f"block {n} heading") for h in headings),
            )
        )
    return ParsedDocument(
        name=_field(value["name"], str, "name"),
        kind=_field(value["kind"], str, "kind"),
        blocks=blocks,
        pages=_field(value["pages"], (int, type(None)), "pages"),
        encoding=_field(value["encoding"], (str, type(None)), "encoding"),
    )


def _read_exact(stream, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(stream) -> bytes | None:
    header = _read_exact(stream, 8)
    return None if header is None else _read_exact(stream, struct.unpack("<Q", header)[0])


def _memory_mb() -> dict:
    import resource

    used = None
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            used = next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        pass
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    return {"used_mb": used, "limit_mb": None if limit == resource.RLIM_INFINITY else limit // 2**20}


def answer(header: dict, data: bytes) -> object:
    """What a request asks for (see the module docstring); parser errors propagate."""
    kind, name = header.get("kind"), str(header.get("name", "the file"))
    if kind == "parse":
        from knowledge.parse import parse_bytes

        return document_to_dict(parse_bytes(data, name, max_pages=header.get("max_pages")))
    if kind == "call":
        target = str(header.get("function", ""))
        if not _FUNCTION.match(target):
            raise ValueError(f"cannot call {target!r}")
        module, function = target.split(":")
        return getattr(importlib.import_module(module), function)(data, name)
    if kind == "status":
        return {"environment": sorted(os.environ), **_memory_mb()}
    raise ValueError(f"unknown request {kind!r}")


def _preload() -> None:
    # Import the parsers once, at start: the memory they take is the baseline the limit must
    # exceed, and a first file does not pay for the imports out of its time limit.
    import bs4  # noqa: F401
    import docx  # noqa: F401
    import openpyxl  # noqa: F401
    import pdfminer.high_level  # noqa: F401

    import knowledge.parse  # noqa: F401


def limit_memory(megabytes: int) -> None:
    """Cap this process's address space (RLIMIT_AS) at ``megabytes``; 0 leaves it unlimited."""
    if megabytes > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (megabytes * 2**20, megabytes * 2**20))


def _reply(header: bytes, data: bytes, broken: str | None = None) -> bytes:
    from knowledge.errors import TsumugiError

    request = decode(header)
    name = str(request.get("name", "the file")) if isinstance(request, dict) else "the file"
    try:
        if broken:
            return encode({"status": "error", "message": broken})
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
        return encode({"status": "ok", "value": answer(request, data)})
    except TsumugiError as exc:
        return encode({"status": "error", "message": str(exc)})
    except MemoryError:
        raise
    except Exception as exc:  # a parser bug must not take the batch down
        message = f"{name} could not be read ({exc.__class__.__name__}); export it again."
        return encode({"status": "error", "message": message})


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    limit_memory(int(args[args.index("--memory-mb") + 1]) if "--memory-mb" in args else 0)
    broken = None
    try:
        _preload()
    except ImportError as exc:
        # A parser missing from the install: every file fails with the cause, not with a
        # crash the server would put down to the file's size.
        broken = (
            f"The text extractor cannot start ({exc}), so no file can be read; "
            "reinstall Tsumugi's requirements (`make setup`)."
        )
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            header, data = _read_frame(stdin), _read_frame(stdin)
            if header is None or data is None:
                return
            out = _reply(header, data, broken)
        except MemoryError:
            # The parent names the limit and starts a fresh process: this one may be half-way
            # through a request, with its heap in pieces.
            header = data = None
            stdout.write(frame(encode({"status": "memory"})))
            stdout.flush()
            return
        stdout.write(frame(out))
        stdout.flush()


if __name__ == "__main__":
    main()
