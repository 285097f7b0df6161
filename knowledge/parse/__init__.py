"""Turn an uploaded file into blocks of text in reading order.

``parse_file`` picks the parser from the file's content first and its extension second,
and raises :class:`~knowledge.errors.ParseError` with one sentence for the user when a file
cannot be read.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from knowledge.errors import ParseError
from knowledge.parse.base import Block, ParsedDocument
from knowledge.parse.encoding import decode_bytes

__all__ = ["Block", "ParsedDocument", "ParseError", "parse_file", "SUPPORTED_EXTENSIONS"]

_TEXT_KINDS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".log": "text",
    ".rst": "text",
    ".csv": "csv",
    ".tsv": "csv",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
}
SUPPORTED_EXTENSIONS = (".pdf", ".docx", ".xlsx", *sorted(_TEXT_KINDS))
_LEGACY = {
    ".doc": "an old Word .doc file; open it in Word and save it as .docx",
    ".xls": "an old Excel .xls file; save it as .xlsx or CSV",
    ".ppt": "a PowerPoint file, which is not supported; export it to PDF",
    ".pptx": "a PowerPoint file, which is not supported; export it to PDF",
}


def detect_kind(data: bytes, suffix: str) -> str | None:
    """Name the format from the bytes, falling back on the extension for text formats."""
    head = data[:2048]
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        try:
            import io

            names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
        except zipfile.BadZipFile:
            return "broken-zip"
        if "word/document.xml" in names:
            return "docx"
        if "xl/workbook.xml" in names:
            return "xlsx"
        return "zip"
    if suffix in (".pdf", ".docx", ".xlsx"):
        return "mismatch"
    if suffix in _TEXT_KINDS:
        return _TEXT_KINDS[suffix]
    if b"\x00" not in head or head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        lowered = head.lower()
        if b"<html" in lowered or b"<!doctype html" in lowered:
            return "html"
        return "text" if _is_text(data) else None
    return None


def _is_text(data: bytes) -> bool:
    text, _ = decode_bytes(data[:65536])
    printable = sum(1 for c in text if c.isprintable() or c in "\n\r\t")
    return printable >= 0.95 * max(1, len(text))


def parse_bytes(data: bytes, name: str, max_pages: int | None = None) -> ParsedDocument:
    """Parse the bytes of a file called ``name``."""
    suffix = Path(name).suffix.lower()
    if not data:
        raise ParseError(f"{name} is empty; there is nothing to index.")
    if suffix in _LEGACY:
        raise ParseError(f"{name} is {_LEGACY[suffix]}.")
    kind = detect_kind(data, suffix)
    if kind is None or kind == "zip":
        raise ParseError(
            f"{name} is not a supported file type; upload PDF, DOCX, XLSX, HTML, Markdown, text or CSV."
        )
    if kind == "mismatch":
        raise ParseError(
            f"{name} does not contain what its extension says ({suffix}); it may be damaged "
            "or renamed, so export it again."
        )
    if kind == "broken-zip":
        raise ParseError(f"{name} is a damaged Office file; open it and save it again.")
    doc = _parse_kind(kind, data, name, max_pages)
    if not any(b.text.strip() for b in doc.blocks):
        raise ParseError(f"{name} contains no text; there is nothing to index.")
    return doc


def _parse_kind(kind: str, data: bytes, name: str, max_pages: int | None) -> ParsedDocument:
    import io
    import tempfile

    if kind in ("pdf", "docx", "xlsx"):
        # pdfminer and python-docx want a file; a temporary copy keeps the original untouched.
        with tempfile.NamedTemporaryFile(suffix="." + kind) as tmp:
            tmp.write(data)
            tmp.flush()
            if kind == "pdf":
                from knowledge.parse.pdf import parse_pdf

                return parse_pdf(Path(tmp.name), name, max_pages=max_pages)
            if kind == "docx":
                from knowledge.parse.office import parse_docx

                return parse_docx(Path(tmp.name), name)
            from knowledge.parse.office import parse_xlsx

            return parse_xlsx(io.BytesIO(data), name)
    if kind == "html":
        from knowledge.parse.html import declared_charset, parse_html

        charset = declared_charset(data)
        text, encoding = None, None
        if charset:
            try:
                text, encoding = data.decode(charset), charset
            except (LookupError, UnicodeDecodeError):
                text = None
        if text is None:
            text, encoding = decode_bytes(data)
        return parse_html(text, name, encoding)
    text, encoding = decode_bytes(data)
    from knowledge.parse import text as textparse

    parser = {
        "markdown": textparse.parse_markdown,
        "csv": textparse.parse_csv,
        "text": textparse.parse_plain,
    }[kind]
    return parser(text.replace("\r\n", "\n").replace("\r", "\n"), name, encoding)


def parse_file(path: str | Path, name: str | None = None, max_pages: int | None = None) -> ParsedDocument:
    """Parse the file at ``path``; ``name`` is what the user called it (defaults to the file name)."""
    path = Path(path)
    name = name or path.name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParseError(f"{name} could not be read ({exc.strerror}).") from exc
    return parse_bytes(data, name, max_pages=max_pages)
