"""Every ingestion fixture gives its expected text, or its expected clear error."""

from __future__ import annotations

import zipfile

import pytest

from knowledge.errors import ParseError
from knowledge.parse import parse_bytes, parse_file
from tests.conftest import FIXTURES

# file -> (snippets that must appear, kind, pages)
READABLE = {
    "pdfminer-jo.pdf": (
        ["わたくしといふ現象は", "假定された有機交流電燈の", "ひとつの青い照明です"],
        "pdf",
        1,
    ),
    "pypdf-multicolumn.pdf": (["Two-Column Document with Lorem Ipsum", "adipiscing"], "pdf", 3),
    "pypdf-pdflatex-4-pages.pdf": (["Hello, here is some text without a meaning"], "pdf", 4),
    "unstructured-fake-memo.pdf": (["20,000 bottles of water", "To Whom it May Concern"], "pdf", 1),
    "unstructured-codeblock.md": (
        ["<h1>Hello, World!</h1>", "Don't forget me this weekend!"],
        "markdown",
        None,
    ),
    "unstructured-docx-tables.docx": (["Header Col 1: Lorem ipsum", "Nested Table"], "docx", None),
    "unstructured-handbook-1p.docx": (["United States Trustee"], "docx", None),
    "unstructured-example-10k-1p.html": (["TRANSITION REPORT PURSUANT TO SECTION 13"], "html", None),
    "unstructured-fake-html-cp1252.html": (["Die schöne Frau", "köstlich", "3,50 €"], "html", None),
    "unstructured-fake-text-utf-16.txt": (
        ["This is a test document", "Hamburgers are delicious"],
        "text",
        None,
    ),
    "unstructured-norwich-city.txt": (["Iwan Roberts", "Norwich City"], "text", None),
    "unstructured-stanley-cups.csv": (["Team: Maple Leafs; Location: TOR; Stanley Cups: 13"], "csv", None),
    "unstructured-stanley-cups-utf-16.csv": (["Team: Blues; Location: STL; Stanley Cups: 1"], "csv", None),
    "unstructured-umlauts-non-utf8.md": (["können", "äöüß"], "markdown", None),
    "LICENSE-unstructured.md": (["Apache License"], "markdown", None),
    "LICENSE-pypdf-sample-files.md": (["PDF Sample Files"], "markdown", None),
}
FAILING = {
    "pypdf-libreoffice-writer-password.pdf": "password-protected",
    "unstructured-password.pdf": "password-protected",
    "unstructured-empty.txt": "is empty",
    "unstructured-fake-text-all-whitespace.txt": "contains no text",
}


def test_every_fixture_is_covered(shared_data):
    on_disk = {p.name for p in FIXTURES.iterdir()}
    assert on_disk == set(READABLE) | set(FAILING)


@pytest.mark.parametrize("name", sorted(READABLE))
def test_readable_fixture(name, shared_data):
    snippets, kind, pages = READABLE[name]
    doc = parse_file(FIXTURES / name)
    assert doc.kind == kind
    assert doc.pages == pages
    for snippet in snippets:
        assert snippet in doc.text, f"{snippet!r} missing from {name}"
    if pages:
        assert {b.page for b in doc.blocks} <= set(range(1, pages + 1))
        assert all(b.page is not None for b in doc.blocks)


@pytest.mark.parametrize("name", sorted(FAILING))
def test_failing_fixture_has_one_clear_sentence(name, shared_data):
    with pytest.raises(ParseError) as info:
        parse_file(FIXTURES / name)
    message = str(info.value)
    assert FAILING[name] in message
    assert message.startswith(name) and message.endswith(".")
    assert "\n" not in message


def test_vertical_japanese_reads_in_order(shared_data):
    text = parse_file(FIXTURES / "pdfminer-jo.pdf").text
    assert text.index("わたくしといふ現象は") < text.index("假定された有機交流電燈の")


def test_pdf_pages_are_numbered(shared_data):
    doc = parse_file(FIXTURES / "pypdf-pdflatex-4-pages.pdf")
    assert sorted({b.page for b in doc.blocks}) == [1, 2, 3, 4]


def test_html_drops_scripts_and_navigation():
    html = b"""<html><head><title>t</title><script>var secret = 1;</script><style>p{}</style></head>
    <body><nav><a href="/">Home</a> <a href="/x">Products</a></nav>
    <main><h1>Returns</h1><p>Items can be returned within <b>30 days</b>.</p>
    <table><tr><th>Plan</th><th>Price</th></tr><tr><td>Basic</td><td>10</td></tr></table></main>
    <footer>Copyright</footer></body></html>"""
    doc = parse_bytes(html, "page.html")
    assert "Items can be returned within 30 days." in doc.text
    assert "Basic | 10" in doc.text
    for unwanted in ("secret", "Home", "Products", "Copyright"):
        assert unwanted not in doc.text
    assert doc.blocks[-1].headings == ("Returns",)


def test_markdown_heading_paths():
    md = "# Guide\n\nIntro.\n\n## Setup\n\nStep one.\n\n### Poles\n\nConnect poles.\n\n## Care\n\nDry it.\n"
    doc = parse_bytes(md.encode(), "guide.md")
    paths = {b.text: b.headings for b in doc.blocks if b.kind == "paragraph"}
    assert paths == {
        "Intro.": ("Guide",),
        "Step one.": ("Guide", "Setup"),
        "Connect poles.": ("Guide", "Setup", "Poles"),
        "Dry it.": ("Guide", "Care"),
    }


JAPANESE = "返品は商品到着後30日以内に受け付けます。開封済みの商品は返品できません。"


@pytest.mark.parametrize("encoding", ["utf-8", "shift_jis", "euc_jp", "utf-16"])
def test_japanese_encodings(encoding):
    doc = parse_bytes(("# 返品について\n\n" + JAPANESE).encode(encoding), "policy.md")
    assert JAPANESE in doc.text
    assert doc.blocks[0].text == "返品について"


def test_csv_rows_are_records_with_column_names():
    data = "question,answer\nHow long is the warranty?,Two years.\n送料はいくらですか？,550円です。\n"
    doc = parse_bytes(data.encode("shift_jis"), "faq.csv")
    assert [b.text for b in doc.blocks] == [
        "question: How long is the warranty?; answer: Two years.",
        "question: 送料はいくらですか？; answer: 550円です。",
    ]
    assert all(b.kind == "record" for b in doc.blocks)


@pytest.mark.parametrize(
    "name, data, expected",
    [
        ("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog", "could not be read as a PDF"),
        ("notes.pdf", b"just some text pretending", "does not contain what its extension says"),
        ("photo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200), "not a supported file type"),
        ("old.doc", b"\xd0\xcf\x11\xe0" + bytes(100), "old Word .doc file"),
        ("broken.docx", b"PK\x03\x04garbage", "damaged Office file"),
    ],
)
def test_bad_files_get_a_clear_sentence(name, data, expected):
    with pytest.raises(ParseError) as info:
        parse_bytes(data, name)
    assert expected in str(info.value)
    assert str(info.value).startswith(name)


def test_zip_that_is_not_a_document(tmp_path):
    path = tmp_path / "archive.docx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ParseError, match="not a supported file type"):
        parse_file(path)


def test_pdf_page_limit(shared_data):
    with pytest.raises(ParseError, match="more than 2 pages"):
        parse_file(FIXTURES / "pypdf-pdflatex-4-pages.pdf", max_pages=2)
