"""Types shared by the parsers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

BlockKind = Literal["heading", "paragraph", "table", "record", "code"]


@dataclass(frozen=True)
class Block:
    """One piece of a document in reading order."""

    text: str
    kind: BlockKind = "paragraph"
    page: int | None = None
    """1-based page number, for formats that have pages."""
    headings: tuple[str, ...] = ()
    """Heading path above this block, outermost first."""


@dataclass
class ParsedDocument:
    """What a parser returns: the blocks of one file, and facts about it."""

    name: str
    kind: str
    blocks: list[Block] = field(default_factory=list)
    pages: int | None = None
    encoding: str | None = None

    @property
    def text(self) -> str:
        return "\n\n".join(b.text for b in self.blocks)


class HeadingTracker:
    """Keeps the current heading path while a parser walks a document."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, str]] = []

    def enter(self, level: int, title: str) -> None:
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(t for _, t in self._stack)
