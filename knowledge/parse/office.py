"""DOCX: paragraphs with their heading path, and tables as rows of named cells."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from knowledge.errors import ParseError
from knowledge.parse.base import Block, HeadingTracker, ParsedDocument

_HEADING_STYLE = re.compile(r"^(?:Heading|見出し)\s*(\d)", re.IGNORECASE)


def _table_blocks(table, headings: tuple[str, ...]) -> list[Block]:
    rows = [[cell.text.strip() for cell in row.cells] for row in table.rows]
    rows = [r for r in rows if any(r)]
    if not rows:
        return []
    # Merged cells repeat their text in python-docx; collapse consecutive repeats.
    rows = [[c for i, c in enumerate(r) if i == 0 or c != r[i - 1]] for r in rows]
    header = rows[0]
    blocks = []
    if len(rows) > 1 and all(header):
        for row in rows[1:]:
            if len(row) == len(header):
                text = "; ".join(f"{h}: {v}" for h, v in zip(header, row) if v)
            else:
                text = " | ".join(c for c in row if c)
            blocks.append(Block(text=text, kind="table", headings=headings))
    else:
        text = "\n".join(" | ".join(c for c in row if c) for row in rows)
        blocks.append(Block(text=text, kind="table", headings=headings))
    return blocks


def parse_docx(path: Path, name: str) -> ParsedDocument:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(str(path))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ParseError(
            f"{name} is not a valid Word document; open it in Word and save it again as .docx."
        ) from exc
    doc = ParsedDocument(name=name, kind="docx")
    tracker = HeadingTracker()
    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            text = item.text.strip()
            if not text:
                continue
            style = item.style.name if item.style is not None else ""
            match = _HEADING_STYLE.match(style or "")
            if match or style == "Title":
                tracker.enter(int(match.group(1)) if match else 0, text)
                doc.blocks.append(Block(text=text, kind="heading", headings=tracker.path))
            else:
                doc.blocks.append(Block(text=text, headings=tracker.path))
        elif isinstance(item, Table):
            doc.blocks.extend(_table_blocks(item, tracker.path))
    return doc


def parse_xlsx(stream, name: str) -> ParsedDocument:
    """Each sheet's rows as records named by the sheet's first row."""
    import openpyxl

    try:
        book = openpyxl.load_workbook(stream, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds on damaged files
        raise ParseError(f"{name} is not a readable Excel workbook; save it again as .xlsx.") from exc
    doc = ParsedDocument(name=name, kind="xlsx")
    for sheet in book.worksheets:
        rows = [
            ["" if v is None else str(v).strip() for v in row] for row in sheet.iter_rows(values_only=True)
        ]
        rows = [r for r in rows if any(r)]
        if not rows:
            continue
        header = [h or f"column {i + 1}" for i, h in enumerate(rows[0])]
        for row in rows[1:]:
            text = "; ".join(f"{h}: {v}" for h, v in zip(header, row) if v)
            if text:
                doc.blocks.append(Block(text=text, kind="record", headings=(sheet.title,)))
    book.close()
    return doc
