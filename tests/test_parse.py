"""Every ingestion fixture gives its expected text, or its expected clear error."""

from __future__ import annotations

import zipfile

import pytest

from knowledge.errors import ParseError
from knowledge.parse import parse_bytes, parse_file
from tests.conftest import DATA, FIXTURES
from tests.pdf_pages import write_pdf

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


def test_pdf_page_numbers_and_running_heads_are_dropped_and_broken_sentences_made_whole(shared_data):
    # Each page's number sat in the text ("…you will get no / 1 / information."), and the
    # sentence a page break cut was two sentences on two pages.
    doc = parse_file(FIXTURES / "pypdf-pdflatex-4-pages.pdf")
    assert not [b.text for b in doc.blocks if b.text.strip().isdigit()]
    page = {n: [b.text for b in doc.blocks if b.page == n] for n in (1, 2)}
    assert page[1][-1].endswith("If you read this text, you will get no information.")
    assert page[2][0].startswith("Really?")

    # A manual with a running head and "Page N of M" under each page (tests/data/documents).
    doc = parse_file(DATA / "documents" / "router-manual.pdf")
    assert doc.pages == 2
    # The running head stays once, where it first shows (a table's header row repeated on
    # every page keeps its first), and the page numbers go.
    assert [(b.page, b.text) for b in doc.blocks if "User Manual" in b.text] == [
        (1, "Acme Router X200 - User Manual")
    ]
    assert not [b.text for b in doc.blocks if "Page " in b.text]
    step = (
        "To restore the factory settings, hold the recessed reset button on the back panel for "
        "ten seconds until the power light blinks amber, then wait two minutes for the router to restart."
    )
    assert [b.page for b in doc.blocks if step in b.text] == [1]
    assert [b.text for b in doc.blocks if b.page == 2] == [
        "After a reset the network name and password printed on the label under the router work again."
    ]

    # Japanese: lines wrapped at the column's edge, close (one box) or spaced as Word's grid
    # spaces them (a box each), and a sentence over the page break.
    doc = parse_file(DATA / "documents" / "jp-manual.pdf")
    text = {n: "".join(b.text for b in doc.blocks if b.page == n) for n in (1, 2)}
    assert "本製品は室内での使用を前提としています。" in text[1]
    assert "初期設定に戻すには、背面のリセットボタンを十秒間押し続けてください。" in text[1]
    assert text[1].endswith("ランプが点滅したら手を離します。")
    assert [b.text for b in doc.blocks if b.page == 2] == ["再起動には約二分かかります。"]
    assert "取扱説明書" not in text[2] and "- 1 -" not in text[1]


def test_pdf_body_text_is_not_taken_for_page_furniture(shared_data):
    # A table's numbers, a one-page memo's date and signature, a poem's short vertical lines.
    table = parse_file(FIXTURES / "pypdf-multicolumn.pdf").text
    assert "8.9 11.5 10.7 5.8 5.5" in table and "Table 1: EU Countries Information" in table
    memo = [b.text for b in parse_file(FIXTURES / "unstructured-fake-memo.pdf").blocks]
    assert memo[0] == "May 5, 2023" and memo[-1] == "Mallori"
    poem = parse_file(FIXTURES / "pdfminer-jo.pdf").blocks
    assert [b.text for b in poem[1:3]] == ["わたくしといふ現象は", "假定された有機交流電燈の"]

    # A number alone at a page's foot is its page number only when it runs with the pages.
    from knowledge.parse.pdf import _Box, _furniture

    def foot(numbers: list[str]) -> set[str]:
        boxes = []
        for page, number in enumerate(numbers, start=1):
            boxes += [
                _Box("Text of page " + "abc"[page - 1] + ".", page, top=700, bottom=200),
                _Box(number, page, top=60, bottom=50),
            ]
        return {boxes[i].text for i in _furniture(boxes, len(numbers))}

    assert foot(["1"]) == {"1"} and foot(["12"]) == set()
    assert foot(["7", "8", "9"]) == {"7", "8", "9"} and foot(["40", "25", "12"]) == set()


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


def _blocks(path) -> list[tuple[int, str]]:
    return [(b.page, b.text) for b in parse_file(path).blocks]


def _grid(lines: list[str], top: float = 760, pitch: float = 18, size: float = 10.5) -> list:
    """Japanese lines spaced as Word's grid spaces them (a pdfminer box each)."""
    return [(72, top - n * pitch, size, line) for n, line in enumerate(lines)]


def test_japanese_lines_join_into_their_paragraph_and_no_further(tmp_path):
    # 21 characters reach the column's edge; headings and a paragraph's short last line do not.
    page = _grid(
        [
            "本製品は室内での使用を前提としています。屋外",
            "や浴室など湿気の多い場所では使わないでくださ",
            "い。",
            "設置について",
            "本体は平らな場所に置いてください。壁からは十セ",
            "ンチ以上離してください。",
            "同梱品",
            "・ルーター本体",
            "・電源アダプター",
            "・ＬＡＮケーブル",
        ]
    )
    assert _blocks(write_pdf(tmp_path / "grid.pdf", [page])) == [
        (1, "本製品は室内での使用を前提としています。屋外や浴室など湿気の多い場所では使わないでください。"),
        (1, "設置について"),
        (1, "本体は平らな場所に置いてください。壁からは十センチ以上離してください。"),
        (1, "同梱品"),
        (1, "・ルーター本体"),
        (1, "・電源アダプター"),
        (1, "・LANケーブル"),
    ]
    # Items that fill the column's width as the body's lines do are each a line of their own.
    rules = [
        "本製品は室内での使用を前提としています。屋外",
        "や浴室など湿気の多い場所では使わないでくださ",
        "い。安全のため、次のことを必ず守ってください。",
        "・ぬれた手で電源プラグを抜き差ししないこと。",
        "・本体の上に重い物や水の入った容器を置かない",
        "・お手入れの前には必ず電源プラグを抜くこと。",
    ]
    assert [text for _, text in _blocks(write_pdf(tmp_path / "rules.pdf", [_grid(rules)]))] == [
        "本製品は室内での使用を前提としています。屋外や浴室など湿気の多い場所では使わないでください。安全のため、次のことを必ず守ってください。",
        "・ぬれた手で電源プラグを抜き差ししないこと。",
        "・本体の上に重い物や水の入った容器を置かない",
        "・お手入れの前には必ず電源プラグを抜くこと。",
    ]
    # Lines close enough to share a box: a list's items of one width stay apart.
    items = ["同梱品", "・ルーター本体", "・電源アダプター", "・ＬＡＮケーブル", "・取扱説明書"]
    listed = _blocks(write_pdf(tmp_path / "list.pdf", [_grid(items, pitch=13)]))
    assert "".join(text for _, text in listed).split("\n") == [
        "同梱品",
        "・ルーター本体",
        "・電源アダプター",
        "・LANケーブル",
        "・取扱説明書",
    ]


def test_a_heading_that_opens_a_page_is_not_carried_back(tmp_path):
    japanese = [
        _grid(["使用上の注意", "・濡れた手で電源プラグを抜き差ししないこと"]),
        _grid(["第２章　接続", "付属のケーブルでパソコンとつないでください。"]),
    ]
    assert [page for page, _ in _blocks(write_pdf(tmp_path / "ja.pdf", japanese))] == [1, 1, 2, 2]
    english = [
        [(72, 760, 11, "Specifications"), (72, 740, 11, "Maximum throughput 1200")],
        [(72, 760, 11, "iPhone and iPad setup"), (72, 740, 11, "Open the app and scan the code.")],
    ]
    assert _blocks(write_pdf(tmp_path / "en.pdf", english)) == [
        (1, "Specifications"),
        (1, "Maximum throughput 1200"),
        (2, "iPhone and iPad setup"),
        (2, "Open the app and scan the code."),
    ]


def test_what_repeats_at_a_page_edge_is_furniture_only_when_it_runs_like_it(tmp_path):
    # A datasheet: each page's title differs only in its numbers; no running head.
    sheet = [
        [
            (72, 760, 14, f"Router X{n}00"),
            (72, 700, 11, f"The X{n}00 covers {n * 50} m2."),
            (72, 60, 11, "Acme"),
        ]
        for n in (1, 2, 3)
    ]
    texts = [text for _, text in _blocks(write_pdf(tmp_path / "sheet.pdf", sheet))]
    assert [t for t in texts if t.startswith("Router")] == ["Router X100", "Router X200", "Router X300"]
    assert texts.count("Acme") == 1  # a footer's words: kept where they first show
    # A table's header row at the top of every page keeps its first; its cells' numbers at the
    # foot of ten pages are no page numbers (one in ten happens to run with the page).
    quantities = [4, 1, 5, 2, 2, 8, 9, 1, 3, 6]
    table = [
        [(72, 760, 11, "Part"), (300, 760, 11, "Qty"), (72, 700, 11, f"Bolt M{page}"), (300, 60, 11, str(q))]
        for page, q in enumerate(quantities, start=1)
    ]
    texts = [text for _, text in _blocks(write_pdf(tmp_path / "table.pdf", table))]
    assert texts.count("Part") == 1 and texts.count("Qty") == 1
    assert [int(t) for t in texts if t.isdigit()] == quantities
