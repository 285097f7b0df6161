"""HTML: the main text in reading order, without scripts, styles or navigation."""

from __future__ import annotations

import re

from knowledge.parse.base import Block, HeadingTracker, ParsedDocument

_SKIP = {
    "script",
    "style",
    "noscript",
    "template",
    "svg",
    "canvas",
    "iframe",
    "object",
    "nav",
    "aside",
    "footer",
    "form",
    "button",
    "select",
    "head",
    "title",
    "meta",
    "link",
}
_BLOCK = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "blockquote",
    "pre",
    "br",
    "hr",
    "tr",
    "figure",
    "figcaption",
    "address",
    "header",
    "body",
    "caption",
    "center",
}
_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_\-]+)""", re.IGNORECASE)


def declared_charset(data: bytes) -> str | None:
    match = _META_CHARSET.search(data[:4096])
    return match.group(1).decode("ascii").lower() if match else None


class _Walker:
    def __init__(self, doc: ParsedDocument) -> None:
        self.doc = doc
        self.buf: list[str] = []
        self.tracker = HeadingTracker()

    def flush(self, kind: str = "paragraph") -> None:
        text = _SPACES.sub(" ", "".join(self.buf))
        lines = (line.strip().strip("|").strip() for line in text.splitlines())
        text = "\n".join(line for line in lines if line)
        self.buf = []
        if text:
            self.doc.blocks.append(Block(text=text, kind=kind, headings=self.tracker.path))

    def walk(self, node) -> None:
        from bs4 import Comment, NavigableString, Tag

        for child in node.children:
            if isinstance(child, Comment):
                continue
            if isinstance(child, NavigableString):
                self.buf.append(str(child) if node.name == "pre" else str(child).replace("\n", " "))
                continue
            if not isinstance(child, Tag) or child.name in _SKIP or _hidden(child):
                continue
            if child.name in _HEADINGS:
                self.flush()
                title = _SPACES.sub(" ", child.get_text(" ")).strip()
                if title:
                    self.tracker.enter(_HEADINGS[child.name], title)
                    self.doc.blocks.append(Block(text=title, kind="heading", headings=self.tracker.path))
            elif child.name == "pre":
                self.flush()
                self.walk(child)
                self.flush("code")
            elif child.name in ("td", "th"):
                self.walk(child)
                self.buf.append(" | ")
            elif child.name in _BLOCK:
                self.flush()
                self.walk(child)
                self.flush()
            else:
                self.walk(child)


def _hidden(tag) -> bool:
    if tag.get("hidden") is not None or tag.get("aria-hidden") == "true":
        return True
    if tag.get("role") in ("navigation", "banner", "contentinfo"):
        return True
    style = (tag.get("style") or "").replace(" ", "").lower()
    return "display:none" in style


def parse_html(text: str, name: str, encoding: str | None = None) -> ParsedDocument:
    import warnings

    from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning

    with warnings.catch_warnings():
        # XHTML exports (SEC filings, for one) start with an XML declaration; lxml's HTML
        # parser still reads them correctly.
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(text, "lxml")
    root = soup.find("main") or soup.find("article") or soup.body or soup
    doc = ParsedDocument(name=name, kind="html", encoding=encoding)
    walker = _Walker(doc)
    walker.walk(root)
    walker.flush()
    return doc
