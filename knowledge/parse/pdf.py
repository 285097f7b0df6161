"""PDF text with page numbers, through pdfminer.six (vertical Japanese included)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from knowledge.errors import ParseError
from knowledge.parse.base import Block, ParsedDocument

_HYPHEN_BREAK = re.compile(r"(\w)-\n(?=[a-z])")
_LATIN_END = re.compile(r"[A-Za-z0-9,;:.)\]\"'’”]$")
_LATIN_START = re.compile(r"^[A-Za-z0-9(\[\"'‘“]")


def _join_lines(text: str) -> str:
    """Undo line wrapping inside a text box: Latin lines join with a space, CJK lines stay."""
    text = _HYPHEN_BREAK.sub(r"\1", text)
    lines = [ln.strip() for ln in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if not line:
            continue
        if out and _LATIN_END.search(out[-1]) and _LATIN_START.match(line):
            out[-1] = out[-1] + " " + line
        else:
            out.append(line)
    return "\n".join(out)


def parse_pdf(path: Path, name: str, max_pages: int | None = None) -> ParsedDocument:
    from pdfminer.high_level import extract_pages
    from pdfminer.layout import LAParams, LTTextContainer
    from pdfminer.pdfdocument import PDFEncryptionError, PDFPasswordIncorrect

    doc = ParsedDocument(name=name, kind="pdf")
    # detect_vertical puts vertical Japanese text in reading order; without it the
    # characters of vertical lines come out scrambled.
    laparams = LAParams(detect_vertical=True)
    pages = 0
    try:
        for number, page in enumerate(extract_pages(str(path), laparams=laparams), start=1):
            if max_pages is not None and number > max_pages:
                raise ParseError(f"{name} has more than {max_pages} pages; split it or raise the page limit.")
            pages = number
            for element in page:
                if not isinstance(element, LTTextContainer):
                    continue
                text = _join_lines(unicodedata.normalize("NFKC", element.get_text()))
                if text.strip():
                    doc.blocks.append(Block(text=text, page=number))
    except (PDFPasswordIncorrect, PDFEncryptionError) as exc:
        raise ParseError(
            f"{name} is password-protected; save an unprotected copy and upload that instead."
        ) from exc
    except ParseError:
        raise
    except Exception as exc:  # pdfminer raises many kinds of errors on broken files
        raise ParseError(
            f"{name} could not be read as a PDF ({type(exc).__name__}); it may be damaged, "
            "so try re-exporting it."
        ) from exc
    doc.pages = pages
    if not doc.blocks:
        raise ParseError(
            f"{name} has no extractable text (it may be a scanned image); "
            "run it through OCR and upload the result."
        )
    return doc
