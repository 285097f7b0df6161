"""The ingestion pipeline: parse, chunk, embed and store a batch of files.

``ingest_files`` is a generator of :class:`~knowledge.progress.Progress` events that returns
one :class:`FileResult` per file; the UI, the CLI and the tests all drive it the same way.
Each file is committed on its own, so a failure or a cancel keeps the files before it, and a
bad file gets its own sentence while the rest of the batch goes on.
"""

from __future__ import annotations

import errno
import hashlib
import sqlite3
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace

import numpy as np

from knowledge.chunk import ChunkConfig, chunk_document, indexed_text
from knowledge.embed import get_embedder
from knowledge.errors import ParseError, TsumugiError
from knowledge.limits import IngestLimits, check_archive, check_count, check_size, parse_limited
from knowledge.names import document_name
from knowledge.progress import Clock, Progress, Relay
from knowledge.sources import FileResult, Source, Status, collect_sources, scan_sources
from knowledge.store import KnowledgeBase

__all__ = [
    "FileResult",
    "Source",
    "Status",
    "collect_sources",
    "effective_chunking",
    "ingest_files",
    "ingest_in_batches",
    "reembed",
    "scan_sources",
]


def effective_chunking(config: ChunkConfig, max_tokens: int) -> ChunkConfig:
    """Keep chunks (with a heading line) inside what the embedder reads."""
    limit = max(32, max_tokens - 32)
    if config.size <= limit:
        return config
    return replace(
        config, size=limit, overlap=min(config.overlap, limit // 4), min_size=min(config.min_size, limit // 2)
    )


@dataclass
class _Prepared:
    """A file read, parsed and chunked, waiting for its vectors."""

    index: int
    source: Source
    data: bytes
    sha: str
    text_sha: str
    kind: str
    pages: int | None
    chunks: list


def _prepare(kb, source, embedder, chunking, limits: IngestLimits, pending, taken) -> _Prepared | FileResult:
    document_name(source.name)  # a refused name is this file's one sentence
    again = source.name in taken
    taken.add(source.name)
    try:
        check_size(source.name, source.path.stat().st_size, limits)
        data = source.path.read_bytes()
    except OSError as exc:
        raise ParseError(f"{source.name} could not be read ({exc.strerror}).") from exc
    if data.startswith(b"PK\x03\x04"):
        check_archive(data, source.name, limits)
    sha = hashlib.sha256(data).hexdigest()
    same = kb.find_by_hash(sha)
    if same is not None:
        told = (
            "Already in the knowledge base."
            if same.name == source.name
            else f"Already in the knowledge base (same content as {same.name})."
        )
        return FileResult(source.name, "unchanged", same.chunks, told)
    doc = parse_limited(data, source.name, limits)
    text_sha = hashlib.sha256(" ".join(doc.text.split()).encode("utf-8")).hexdigest()
    same = kb.find_by_text_hash(text_sha)
    if same is not None and same.name != source.name:
        return FileResult(
            source.name,
            "unchanged",
            same.chunks,
            f"Already in the knowledge base (same text as {same.name}).",
        )
    twin = next((p for p in pending if text_sha == p.text_sha or sha == p.sha), None)
    if twin is not None:
        return FileResult(
            source.name, "unchanged", len(twin.chunks), f"Same content as {twin.source.name} in this upload."
        )
    if again:  # the second would silently replace the first
        return FileResult(
            source.name,
            "failed",
            message=f"Another file in this upload is also called {source.name}; rename one and add it again.",
        )
    chunks = chunk_document(doc, embedder.tokenizer, chunking, embedder.reads)
    return _Prepared(0, source, data, sha, text_sha, doc.kind, doc.pages, chunks)


def ingest_files(
    kb: KnowledgeBase,
    sources: list[Source],
    cancel: threading.Event | None = None,
    limits: IngestLimits | None = None,
    group_chunks: int = 1024,
) -> Generator[Progress, None, list[FileResult]]:
    """Add ``sources`` to ``kb``; yields progress, returns one result per file, in order.

    Files are parsed and chunked one by one, and their chunks embedded together in groups of
    about ``group_chunks``, longest first, as ``SentenceTransformer.encode`` does on a whole
    corpus: embedding each small file on its own padded more and cost 15% on the contoso
    manuals. Each file is then committed on its own, so a failure or a cancel keeps the
    files committed before it.
    """
    limits = limits or IngestLimits()
    check_count(len(sources), limits)
    embedder = get_embedder(kb.embed_model)
    chunking = effective_chunking(kb.chunking, embedder.max_tokens)
    clock = Clock()
    total = len(sources)
    results: dict[int, FileResult] = {}
    pending: list[_Prepared] = []
    taken: set[str] = set()

    with kb.write_lock:
        for i, source in enumerate(sources):
            if cancel is not None and cancel.is_set():
                break
            yield clock.event("Reading", len(results), total, "files", source.name, items=(source.name,))
            try:
                prepared = _prepare(kb, source, embedder, chunking, limits, pending, taken)
            except TsumugiError as exc:  # ParseError included: one sentence for this file
                prepared = FileResult(source.name, "failed", message=str(exc))
            except MemoryError:
                prepared = FileResult(
                    source.name,
                    "failed",
                    message=(
                        f"{source.name} is too large to process in the memory available; "
                        "split it into smaller files."
                    ),
                )
            if isinstance(prepared, FileResult):
                results[i] = prepared
                yield clock.event(
                    "Indexed",
                    len(results),
                    total,
                    "files",
                    f"{source.name}: {prepared.status}",
                    items=(source.name,),
                )
            else:
                prepared.index = i
                pending.append(prepared)
            if pending and (sum(len(p.chunks) for p in pending) >= group_chunks or i == total - 1):
                try:
                    yield from _embed_and_store(kb, pending, embedder, clock, results, total, cancel)
                except (OSError, sqlite3.OperationalError) as exc:
                    if not _disk_full(exc):
                        raise
                    # Each document is one transaction: those stored stay, the rest are reported.
                    for p in pending:
                        results.setdefault(p.index, FileResult(p.source.name, "failed", message=DISK_FULL))
                    for j in range(i + 1, total):
                        results.setdefault(j, FileResult(sources[j].name, "failed", message=DISK_FULL))
                    break
                pending = []
        # Files not reached, or parsed but not stored before a cancel, are reported as such.
        for j in range(total):
            results.setdefault(
                j, FileResult(sources[j].name, "cancelled", message="Cancelled before it was stored.")
            )
        try:
            kb.save_index()
        except (OSError, sqlite3.OperationalError) as exc:
            if not _disk_full(exc):
                raise
            # SQLite holds everything; the index is rebuilt from it when there is room again.
    return [results[i] for i in range(total)]


def ingest_in_batches(
    ingest_batch: Callable[[list[Source]], Generator[Progress, None, list[FileResult]]],
    sources: list[Source],
    batch_size: int,
    cancel: threading.Event | None = None,
) -> Generator[Progress, None, list[FileResult]]:
    """Ingest more files than one upload may hold: ``ingest_batch`` (``ingest_files`` on a
    knowledge base, or ``Tsumugi.ingest``) runs on ``batch_size`` files at a time.

    Yields progress over all ``sources`` (``Indexed: 730/2000 files``), and returns one
    result per file, in order; after a cancel the files of later batches are ``cancelled``."""
    clock = Clock()
    total = len(sources)
    results: list[FileResult] = []
    for start in range(0, total, max(1, batch_size)):
        batch = sources[start : start + batch_size]
        relay = Relay(ingest_batch(batch))
        for event in relay:
            if event.unit != "files":
                yield event
                continue
            yield clock.event(
                event.stage,
                start + event.done,
                total,
                "files",
                event.message,
                fraction=(start + event.fraction * len(batch)) / total,
                items=event.items,
            )
        results += relay.result or []
        if cancel is not None and cancel.is_set():
            break
    results += [
        FileResult(s.name, "cancelled", message="Cancelled before it was stored.")
        for s in sources[len(results) :]
    ]
    return results


DISK_FULL = (
    "The disk holding the data folder is full, so this file was not stored; free some space "
    "(or ask an admin to) and upload it again. Documents already stored are unaffected."
)


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return "full" in str(exc).lower()


def _embed_and_store(kb, group, embedder, clock, results, total, cancel):
    texts = [c.indexed_text for p in group for c in p.chunks]
    names = tuple(p.source.name for p in group)
    vectors = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    done = 0
    for positions, batch in embedder.encode_batches(texts):
        if cancel is not None and cancel.is_set():
            return
        vectors[positions] = batch
        done += len(positions)
        yield clock.event(
            "Embedding",
            len(results),
            total,
            "files",
            f"{done}/{len(texts)} chunks",
            fraction=(len(results) + len(group) * done / len(texts)) / total,
            items=names,
        )
    offset = 0
    for p in group:
        rows = vectors[offset : offset + len(p.chunks)]
        offset += len(p.chunks)
        if cancel is not None and cancel.is_set():
            return
        previous = kb.find_by_name(p.source.name)
        kb.add_document(
            p.source.name,
            p.data,
            p.sha,
            p.text_sha,
            p.kind,
            p.pages,
            p.chunks,
            rows,
            replace=previous.id if previous else None,
        )
        where = f", {p.pages} page{'s' if p.pages != 1 else ''}" if p.pages else ""
        results[p.index] = FileResult(
            p.source.name,
            "updated" if previous else "added",
            len(p.chunks),
            f"{len(p.chunks)} chunk{'s' if len(p.chunks) != 1 else ''}{where}.",
        )
        yield clock.event(
            "Indexed",
            len(results),
            total,
            "files",
            f"{p.source.name}: {results[p.index].status}",
            items=(p.source.name,),
        )


def reembed(
    kb: KnowledgeBase, embed_model: str, cancel: threading.Event | None = None
) -> Generator[Progress, None, int]:
    """Re-embed every chunk with ``embed_model`` and switch the base to it in one transaction."""
    embedder = get_embedder(embed_model)
    clock = Clock()
    rows = list(kb.iter_chunk_texts())
    texts = [indexed_text(heading, text) for _, heading, text in rows]
    vectors: dict[int, np.ndarray] = {}
    done = 0
    with kb.write_lock:
        for positions, batch in embedder.encode_batches(texts):
            if cancel is not None and cancel.is_set():
                raise TsumugiError(
                    f"Re-embedding was cancelled; the knowledge base still uses {kb.embed_model}."
                )
            for pos, vector in zip(positions, batch):
                vectors[rows[pos][0]] = vector
            done += len(positions)
            yield clock.event("Re-embedding", done, len(texts), "chunks")
        kb.replace_vectors(embed_model, vectors)
    return len(rows)
