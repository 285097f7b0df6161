"""The ingestion pipeline: parse, chunk, embed and store a batch of files.

``ingest_files`` is a generator of :class:`~knowledge.progress.Progress` events that returns
one :class:`FileResult` per file; the UI, the CLI and the tests all drive it the same way.
Each file is committed on its own, so a failure or a cancel keeps the files before it, and a
bad file gets its own sentence while the rest of the batch goes on.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Generator, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from knowledge.chunk import ChunkConfig, chunk_document, indexed_text
from knowledge.embed import get_embedder
from knowledge.errors import ParseError, TsumugiError
from knowledge.parse import SUPPORTED_EXTENSIONS, parse_bytes
from knowledge.progress import Clock, Progress
from knowledge.store import KnowledgeBase

Status = Literal["added", "updated", "unchanged", "failed", "cancelled"]


@dataclass(frozen=True)
class FileResult:
    name: str
    status: Status
    chunks: int = 0
    message: str = ""


@dataclass(frozen=True)
class Source:
    """A file to ingest: where its bytes are, and the name the user knows it by."""

    path: Path
    name: str


def collect_sources(paths: Iterable[str | Path]) -> list[Source]:
    """Expand folders recursively (supported extensions only, hidden files skipped)."""
    sources: list[Source] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                rel = child.relative_to(path)
                if (
                    child.is_file()
                    and not any(p.startswith(".") for p in rel.parts)
                    and (child.suffix.lower() in SUPPORTED_EXTENSIONS)
                ):
                    sources.append(Source(child, child.name))
        else:
            sources.append(Source(path, path.name))
    return sources


def effective_chunking(config: ChunkConfig, max_tokens: int) -> ChunkConfig:
    """Keep chunks (with a heading line) inside what the embedder reads."""
    limit = max(32, max_tokens - 32)
    if config.size <= limit:
        return config
    return replace(
        config, size=limit, overlap=min(config.overlap, limit // 4), min_size=min(config.min_size, limit // 2)
    )


def ingest_files(
    kb: KnowledgeBase,
    sources: list[Source],
    cancel: threading.Event | None = None,
    max_pages: int | None = None,
) -> Generator[Progress, None, list[FileResult]]:
    """Add ``sources`` to ``kb``; yields progress, returns one result per file."""
    embedder = get_embedder(kb.embed_model)
    chunking = effective_chunking(kb.chunking, embedder.max_tokens)
    clock = Clock()
    results: list[FileResult] = []
    total = len(sources)
    with kb.write_lock:
        for i, source in enumerate(sources):
            if cancel is not None and cancel.is_set():
                results.extend(
                    FileResult(s.name, "cancelled", message="Cancelled before it started.")
                    for s in sources[i:]
                )
                break
            yield clock.event("Reading", i, total, "files", source.name)
            try:
                result = yield from _ingest_one(
                    kb, source, embedder, chunking, clock, i, total, cancel, max_pages
                )
            except ParseError as exc:
                result = FileResult(source.name, "failed", message=str(exc))
            except TsumugiError as exc:
                result = FileResult(source.name, "failed", message=str(exc))
            except MemoryError:
                result = FileResult(
                    source.name,
                    "failed",
                    message=f"{source.name} is too large to process in the memory available; split it into smaller files.",
                )
            results.append(result)
            yield clock.event("Indexed", i + 1, total, "files", f"{source.name}: {result.status}")
            if result.status == "cancelled":
                results.extend(
                    FileResult(s.name, "cancelled", message="Cancelled before it started.")
                    for s in sources[i + 1 :]
                )
                break
        kb.save_index()
    return results


def _ingest_one(kb, source, embedder, chunking, clock, i, total, cancel, max_pages):
    try:
        data = source.path.read_bytes()
    except OSError as exc:
        raise ParseError(f"{source.name} could not be read ({exc.strerror}).") from exc
    sha = hashlib.sha256(data).hexdigest()
    same = kb.find_by_hash(sha)
    if same is not None:
        note = "" if same.name == source.name else f" (same content as {same.name})"
        return FileResult(source.name, "unchanged", same.chunks, f"Already in the knowledge base{note}.")
    doc = parse_bytes(data, source.name, max_pages=max_pages)
    text_sha = hashlib.sha256(" ".join(doc.text.split()).encode("utf-8")).hexdigest()
    same = kb.find_by_text_hash(text_sha)
    if same is not None and same.name != source.name:
        return FileResult(
            source.name,
            "unchanged",
            same.chunks,
            f"Already in the knowledge base (same text as {same.name}).",
        )
    chunks = chunk_document(doc, embedder.tokenizer, chunking)
    texts = [c.indexed_text for c in chunks]
    vectors = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    done = 0
    for positions, batch in embedder.encode_batches(texts):
        if cancel is not None and cancel.is_set():
            return FileResult(source.name, "cancelled", message="Cancelled; nothing of this file was stored.")
        vectors[positions] = batch
        done += len(positions)
        yield clock.event(
            "Embedding",
            i,
            total,
            "files",
            f"{source.name}: {done}/{len(texts)} chunks",
            fraction=(i + done / max(1, len(texts))) / max(1, total),
        )
    previous = kb.find_by_name(source.name)
    kb.add_document(
        source.name,
        data,
        sha,
        text_sha,
        doc.kind,
        doc.pages,
        chunks,
        vectors,
        replace=previous.id if previous else None,
    )
    status: Status = "updated" if previous else "added"
    where = f", {doc.pages} page{'s' if doc.pages != 1 else ''}" if doc.pages else ""
    return FileResult(source.name, status, len(chunks), f"{len(chunks)} chunks{where}.")


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
