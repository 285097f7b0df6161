"""Markdown, plain text and CSV."""

from __future__ import annotations

import csv
import io
import re

from knowledge.errors import ParseError
from knowledge.parse.base import Block, HeadingTracker, ParsedDocument

_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SETEXT = re.compile(r"^(=+|-+)\s*$")


def parse_markdown(text: str, name: str, encoding: str | None = None) -> ParsedDocument:
    doc = ParsedDocument(name=name, kind="markdown", encoding=encoding)
    tracker = HeadingTracker()
    para: list[str] = []
    code: list[str] | None = None

    def flush() -> None:
        body = "\n".join(para).strip()
        para.clear()
        if body:
            doc.blocks.append(Block(text=body, headings=tracker.path))

    lines = text.splitlines()
    for i, line in enumerate(lines):
        if code is not None:
            if _FENCE.match(line):
                body = "\n".join(code).strip()
                if body:
                    doc.blocks.append(Block(text=body, kind="code", headings=tracker.path))
                code = None
            else:
                code.append(line)
            continue
        if _FENCE.match(line):
            flush()
            code = []
            continue
        atx = _ATX.match(line)
        if atx:
            flush()
            tracker.enter(len(atx.group(1)), atx.group(2))
            doc.blocks.append(Block(text=atx.group(2), kind="heading", headings=tracker.path))
            continue
        if _SETEXT.match(line) and len(para) == 1 and i > 0 and lines[i - 1].strip():
            title = para.pop()
            tracker.enter(1 if line.strip()[0] == "=" else 2, title.strip())
            doc.blocks.append(Block(text=title.strip(), kind="heading", headings=tracker.path))
            continue
        if not line.strip():
            flush()
        else:
            para.append(line.rstrip())
    if code:  # an unclosed fence keeps its text
        doc.blocks.append(Block(text="\n".join(code).strip(), kind="code", headings=tracker.path))
    flush()
    return doc


def parse_plain(text: str, name: str, encoding: str | None = None) -> ParsedDocument:
    doc = ParsedDocument(name=name, kind="text", encoding=encoding)
    for para in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in para.splitlines() if ln.strip()]
        if lines:
            doc.blocks.append(Block(text="\n".join(lines)))
    return doc


def parse_csv(text: str, name: str, encoding: str | None = None) -> ParsedDocument:
    """Each row becomes a record "column: value; ..."; leading title rows become a heading."""
    sample = text[:8192]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel_tab if name.lower().endswith(".tsv") else csv.excel
    rows = [[c.strip() for c in row] for row in csv.reader(io.StringIO(text), dialect)]
    rows = [r for r in rows if any(r)]
    if not rows:
        raise ParseError(f"{name} has no rows; check that it is a CSV file with a header row.")
    width = max(len(r) for r in rows)
    # Spreadsheets exported as CSV often start with a title row ("Sales 2024,,,").
    titles: list[str] = []
    while len(rows) > 1 and sum(1 for c in rows[0] if c) < max(2, (width + 1) // 2):
        titles.append(" ".join(c for c in rows.pop(0) if c))
    header = [h or f"column {i + 1}" for i, h in enumerate(rows[0])]
    headings = tuple(titles)
    doc = ParsedDocument(name=name, kind="csv", encoding=encoding)
    for row in rows[1:] if len(rows) > 1 else rows:
        fields = [f"{h}: {v}" for h, v in zip(header, row) if v]
        fields += [v for v in row[len(header) :] if v]
        if fields:
            doc.blocks.append(Block(text="; ".join(fields), kind="record", headings=headings))
    return doc
