"""Token-aware chunking that keeps headings, paragraphs and sentences together.

A document's blocks are cut into sentence units (Japanese 。！？ included); units are packed
into chunks of at most ``size`` tokens of the embedder's tokenizer. A new chunk starts at a
page change, and at a heading once the current chunk holds ``min_size`` tokens; a chunk cut in the middle of a
section repeats up to ``overlap`` tokens of trailing sentences, so a short answer is never cut
in two without also appearing whole.

Text in a language the embedder does not read (Japanese with the English-only default) is
measured at English's rate, :data:`CHARS_PER_TOKEN` characters a token: its tokens mean
nothing to that embedder (all-MiniLM spends one per character), and cutting by them made
Japanese passages a quarter of the size of English ones, too small for BM25 to find
(JaQuAD dev recall@1 0.73 against 0.82; ``bench/results/retrieval_quality.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from knowledge.errors import ConfigError
from knowledge.parse.base import ParsedDocument
from knowledge.text import split_sentences

CHARS_PER_TOKEN = 4
"""How many characters of text the embedder does not read count as one token."""


@dataclass(frozen=True)
class ChunkConfig:
    size: int = 224
    """Most tokens (of the embedder's tokenizer) in one chunk: all-MiniLM reads 256, less room
    for the heading line that is embedded with it."""
    overlap: int = 44
    """Tokens of trailing sentences repeated at the start of the next chunk of a section."""
    min_size: int | None = None
    """A heading starts a new chunk only when the current one has at least this many tokens
    (default 50). Half of ``size`` merged short sections and won retrieval on the small
    support sets, but a merged passage then held two procedures and an answer quoted the wrong
    one (tests/test_evidence.py, dark mode answered with the steps to add a book)."""

    def __post_init__(self) -> None:
        if self.min_size is None:
            object.__setattr__(self, "min_size", min(50, self.size))
        problems = []
        if self.size < 16:
            problems.append(f"`size` should be at least 16 tokens, got {self.size}.")
        if not 0 <= self.overlap < self.size // 2:
            problems.append(
                f"`overlap` should be between 0 and half of `size` ({self.size // 2}), got {self.overlap}."
            )
        if not 0 <= self.min_size <= self.size:
            problems.append(f"`min_size` should be between 0 and `size`, got {self.min_size}.")
        if problems:
            raise ConfigError(" ".join(problems))


class Tokenizer(Protocol):
    def __call__(self, texts: list[str], **kwargs): ...


@dataclass
class Chunk:
    text: str
    page: int | None
    headings: tuple[str, ...]
    tokens: int
    ordinal: int = 0

    @property
    def heading(self) -> str:
        return " > ".join(self.headings)

    @property
    def indexed_text(self) -> str:
        return indexed_text(self.heading, self.text)


def indexed_text(heading: str, text: str) -> str:
    """What is embedded and searched: the heading path gives the passage its context."""
    return f"{heading}\n{text}" if heading else text


@dataclass
class _Unit:
    text: str
    tokens: int
    page: int | None
    headings: tuple[str, ...]
    block: int
    is_heading: bool
    joiner: str = field(default="\n\n")
    """Text that joins this unit to the previous one in the same chunk."""


Reads = Callable[[str], bool]
"""Whether the embedder reads a text's language."""


def _count(tokenizer, texts: list[str], reads: Reads) -> list[int]:
    counts = [math.ceil(len(t) / CHARS_PER_TOKEN) for t in texts]
    read = [i for i, t in enumerate(texts) if reads(t)]
    if read:
        encoded = tokenizer([texts[i] for i in read], add_special_tokens=False)["input_ids"]
        for i, ids in zip(read, encoded):
            counts[i] = len(ids)
    return counts


def _split_long(tokenizer, text: str, size: int, overlap: int, reads: Reads) -> list[str]:
    """Cut a sentence longer than ``size`` tokens into overlapping windows at token boundaries."""
    if reads(text):
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    else:
        offsets = [(i, min(i + CHARS_PER_TOKEN, len(text))) for i in range(0, len(text), CHARS_PER_TOKEN)]
    windows = []
    step = max(1, size - overlap)
    for start in range(0, len(offsets), step):
        end = min(start + size, len(offsets))
        windows.append(text[offsets[start][0] : offsets[end - 1][1]])
        if end == len(offsets):
            break
    return windows


def _units(doc: ParsedDocument, tokenizer, config: ChunkConfig, reads: Reads) -> list[_Unit]:
    raw: list[tuple[str, str, int]] = []
    for b, block in enumerate(doc.blocks):
        if block.kind == "heading":
            raw.append((block.text.strip(), "\n\n", b))
            continue
        for i, (sentence, sep) in enumerate(split_sentences(block.text)):
            joiner = "\n\n" if i == 0 else (sep if sep else "")
            raw.append((sentence, joiner, b))
    counts = _count(tokenizer, [r[0] for r in raw], reads)
    units: list[_Unit] = []
    for (text, joiner, b), tokens in zip(raw, counts):
        block = doc.blocks[b]
        is_heading = block.kind == "heading"
        pieces = [text]
        if tokens > config.size:
            pieces = _split_long(tokenizer, text, config.size, config.overlap, reads)
        piece_tokens = _count(tokenizer, pieces, reads) if len(pieces) > 1 else [tokens]
        for k, (piece, n) in enumerate(zip(pieces, piece_tokens)):
            units.append(
                _Unit(piece, n, block.page, block.headings, b, is_heading, joiner if k == 0 else " ")
            )
    return units


def _common_prefix(paths: list[tuple[str, ...]]) -> tuple[str, ...]:
    prefix = paths[0]
    for path in paths[1:]:
        n = 0
        while n < min(len(prefix), len(path)) and prefix[n] == path[n]:
            n += 1
        prefix = prefix[:n]
    return prefix


def _make_chunk(units: list[_Unit]) -> Chunk:
    text = units[0].text
    for unit in units[1:]:
        text += (unit.joiner or "") + unit.text
    # A chunk that starts with its own heading carries it in the text; its path stops above.
    paths = [u.headings[:-1] if u.is_heading else u.headings for u in units]
    return Chunk(
        text=text,
        page=units[0].page,
        headings=_common_prefix(paths),
        tokens=sum(u.tokens for u in units),
    )


def _rest_fits(units: list[_Unit], current: list[_Unit], start: int, room: int) -> bool:
    """Whether the heading ``units[start]`` opens a subsection of the section the current
    chunk is in, and the rest of that section fits in ``room`` tokens: a procedure whose steps
    are subsections ("Table Setup" > "Step 1", "Step 2", "Step 3") then stays one passage,
    instead of a passage holding Step 1 alone, quoted as if it were the whole procedure. A
    sibling or higher heading still starts a new passage."""
    section = next((u.headings for u in current if not u.is_heading), None)
    # Not at a document's top level: text under its title would make the whole rest of the
    # document one "section", and a short document one passage of every procedure.
    if section is None or len(section) < 2 or units[start].headings[: len(section)] != section:
        return False
    for unit in units[start:]:
        if unit.headings[: len(section)] != section or unit.page != units[start].page:
            return True
        room -= unit.tokens
        if room < 0:
            return False
    return True


def chunk_document(
    doc: ParsedDocument, tokenizer, config: ChunkConfig | None = None, reads: Reads | None = None
) -> list[Chunk]:
    """Cut ``doc`` into chunks; ``tokenizer`` is a Hugging Face tokenizer (the embedder's), and
    ``reads`` tells which texts the embedder reads (default: all)."""
    config = config or ChunkConfig()
    units = _units(doc, tokenizer, config, reads or (lambda text: True))
    chunks: list[Chunk] = []
    current: list[_Unit] = []
    tokens = 0
    continued = False  # the current chunk carries on a section that was already cut

    def close() -> None:
        nonlocal current, tokens
        # A chunk of nothing but headings says nothing on its own: carry it forward.
        if current and not all(u.is_heading for u in current):
            chunks.append(_make_chunk(current))
            current, tokens = [], 0

    for n, unit in enumerate(units):
        if current and unit.page != current[-1].page:
            close()
            continued = False
        elif current and unit.is_heading and (tokens >= config.min_size or continued):
            if continued or not _rest_fits(units, current, n, config.size - tokens):
                close()
                continued = False
        if current and tokens + unit.tokens > config.size:
            previous = current
            close()
            if current:  # only headings were pending and they do not fit with this unit
                current, tokens = [], 0
            else:
                # Repeat trailing sentences of the same block as overlap.
                carry: list[_Unit] = []
                carried = 0
                for old in reversed(previous):
                    if old.is_heading or old.block != unit.block and old.headings != unit.headings:
                        break
                    if carried + old.tokens > config.overlap:
                        break
                    carry.insert(0, old)
                    carried += old.tokens
                if carry and carried + unit.tokens <= config.size:
                    current, tokens = list(carry), carried
                continued = True
        current.append(unit)
        tokens += unit.tokens
    if current:
        chunks.append(_make_chunk(current))
    for i, chunk in enumerate(chunks):
        chunk.ordinal = i
    return chunks
