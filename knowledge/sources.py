"""What an ingestion is asked to read: files and folders turned into named sources.

A folder is walked here, once, so that everything left out of it is said: hidden files and
folders, files of other types, links to folders and names used twice each come back as a
``skipped`` result with the reason, next to the sources to read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from knowledge.names import shown_document_name
from knowledge.parse import SUPPORTED_EXTENSIONS

Status = Literal["added", "updated", "unchanged", "failed", "cancelled", "skipped"]


@dataclass(frozen=True)
class FileResult:
    name: str
    status: Status
    chunks: int = 0
    message: str = ""


@dataclass(frozen=True)
class Source:
    """A file to ingest: where its bytes are, and the name the user knows it by.

    The name is a relative path such as ``teamA/README.md`` (see
    :func:`~knowledge.names.document_name`, which spells it here); a name that is refused keeps
    its spelling and is reported when the batch reaches it."""

    path: Path
    name: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", shown_document_name(self.name))


def scan_sources(paths: Iterable[str | Path]) -> tuple[list[Source], list[FileResult]]:
    """Expand folders recursively; returns the files to ingest and those skipped, with why.

    A file in a folder is named by its path inside that folder (``teamA/README.md``), so two
    ``README.md`` in different subfolders are two documents. Hidden files and folders (names
    starting with ``.``) and files whose extension is not a document type are skipped and
    reported; a file given by name is always read, whatever its name or extension. Of two files
    that would get the same name, the second is skipped and reported."""
    sources: list[Source] = []
    skipped: list[FileResult] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found, passed = _scan_folder(path)
            sources += found
            skipped += passed
        else:
            sources.append(Source(path, path.name))
    seen: dict[str, Path] = {}
    unique = []
    for source in sources:
        if source.name in seen:
            skipped.append(
                FileResult(
                    source.name,
                    "skipped",
                    message=f"{source.path} has the same name as {seen[source.name]} in this import; "
                    "import the two folders separately.",
                )
            )
        else:
            seen[source.name] = source.path
            unique.append(source)
    return unique, skipped


def collect_sources(paths: Iterable[str | Path]) -> list[Source]:
    """The files :func:`scan_sources` would ingest (callers that report skips use that)."""
    return scan_sources(paths)[0]


def _scan_folder(root: Path) -> tuple[list[Source], list[FileResult]]:
    sources: list[Source] = []
    skipped: list[FileResult] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs.sort()
        for name in [d for d in dirs if d.startswith(".") or (here / d).is_symlink()]:
            dirs.remove(name)
            rel = shown_document_name((here / name).relative_to(root).as_posix()) + "/"
            if (here / name).is_symlink():
                reason = "A link to a folder, not followed; give the folder's own path to add it."
            else:
                count = sum(len(f) for _, _, f in os.walk(here / name))
                reason = f"A hidden folder ({count} file{'s' if count != 1 else ''} not read); give its path to add it."
            skipped.append(FileResult(rel, "skipped", message=reason))
        for name in sorted(files):
            path = here / name
            rel = path.relative_to(root).as_posix()
            if name.startswith("."):
                reason = "A hidden file (its name starts with '.'); give its path to add it."
            elif path.suffix.lower() not in SUPPORTED_EXTENSIONS:
                kind = f"{path.suffix} files are" if path.suffix else "A file without an extension is"
                reason = (
                    f"{kind} not read from folders (only {', '.join(SUPPORTED_EXTENSIONS)}); "
                    "give its path to have its content checked."
                )
            elif not path.is_file():
                reason = "Not a regular file."
            else:
                sources.append(Source(path, rel))
                continue
            skipped.append(FileResult(shown_document_name(rel), "skipped", message=reason))
    return sources, skipped
