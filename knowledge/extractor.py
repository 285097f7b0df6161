"""The text-extraction process: ``python -m knowledge.extractor``.

Reads requests from stdin and writes results to stdout, each a pickled tuple after an 8-byte
length: ``(data, name, max_pages)`` in, ``("ok", ParsedDocument)`` or ``("error", message)``
out. It exits when stdin closes, so it never outlives the process that started it.
"""

from __future__ import annotations

import pickle
import struct
import sys


def _read_exact(stream, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def main() -> None:
    from knowledge.errors import TsumugiError
    from knowledge.parse import parse_bytes

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = _read_exact(stdin, 8)
        if header is None:
            return
        payload = _read_exact(stdin, struct.unpack("<Q", header)[0])
        if payload is None:
            return
        data, name, max_pages = pickle.loads(payload)
        try:
            result = ("ok", parse_bytes(data, name, max_pages=max_pages))
        except TsumugiError as exc:
            result = ("error", str(exc))
        except MemoryError:
            result = (
                "error",
                f"{name} is too large to read in the memory available; split it into smaller files.",
            )
        except Exception as exc:  # a parser bug must not take the batch down
            result = ("error", f"{name} could not be read ({exc.__class__.__name__}); export it again.")
        out = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.write(struct.pack("<Q", len(out)) + out)
        stdout.flush()


if __name__ == "__main__":
    main()
