"""Chunking properties with the real embedder's tokenizer."""

from __future__ import annotations

import pytest

from knowledge.chunk import ChunkConfig, chunk_document, split_sentences
from knowledge.errors import ConfigError
from knowledge.parse import parse_bytes, parse_file
from tests.conftest import CONTOSO, FIXTURES


def _tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _docs():
    names = [
        "pypdf-multicolumn.pdf",
        "pdfminer-jo.pdf",
        "unstructured-norwich-city.txt",
        "unstructured-example-10k-1p.html",
        "unstructured-docx-tables.docx",
    ]
    return [parse_file(FIXTURES / n) for n in names] + [parse_file(CONTOSO / "product_info_1.md")]


@pytest.mark.parametrize("config", [ChunkConfig(), ChunkConfig(size=64, overlap=16, min_size=16)])
def test_chunks_stay_within_size_and_lose_no_text(embedder, shared_data, config):
    tok = embedder.tokenizer
    for doc in _docs():
        chunks = chunk_document(doc, tok, config)
        assert chunks, doc.name
        joined = "\n".join(c.text for c in chunks)
        for chunk in chunks:
            assert _tokens(tok, chunk.text) <= config.size, (doc.name, chunk.text[:80])
            assert chunk.tokens <= config.size
        for block in doc.blocks:
            for sentence, _ in split_sentences(block.text):
                if _tokens(tok, sentence) <= config.size:
                    assert sentence in joined, (doc.name, sentence)
        # nothing is dropped even inside sentences cut at token boundaries
        words = {w for b in doc.blocks for w in b.text.split()}
        chunk_words = {w for c in chunks for w in c.text.split()}
        assert len(words - chunk_words) <= 0.01 * len(words), (doc.name, sorted(words - chunk_words)[:10])


def test_overlap_repeats_trailing_sentences(embedder):
    sentences = [f"Sentence number {i} talks about tent pole {i} and its colour code." for i in range(40)]
    doc = parse_bytes(("# Poles\n\n" + " ".join(sentences)).encode(), "poles.md")
    chunks = chunk_document(doc, embedder.tokenizer, ChunkConfig(size=80, overlap=20, min_size=10))
    assert len(chunks) > 3
    for first, second in zip(chunks, chunks[1:]):
        last_sentence = split_sentences(first.text)[-1][0]
        assert second.text.startswith(last_sentence) or last_sentence in second.text


def test_no_overlap_across_headings(embedder):
    md = "# A\n\n" + "Alpha text here. " * 30 + "\n\n# B\n\n" + "Beta text here. " * 30
    chunks = chunk_document(
        parse_bytes(md.encode(), "ab.md"), embedder.tokenizer, ChunkConfig(size=64, overlap=16)
    )
    b_chunks = [c for c in chunks if "Beta" in c.text]
    assert all("Alpha" not in c.text for c in b_chunks)


def test_metadata_is_kept(embedder, shared_data):
    chunks = chunk_document(parse_file(FIXTURES / "pypdf-pdflatex-4-pages.pdf"), embedder.tokenizer)
    assert {c.page for c in chunks} == {1, 2, 3, 4}
    md = parse_file(CONTOSO / "product_info_1.md")
    chunks = chunk_document(md, embedder.tokenizer)
    setup = [c for c in chunks if "Assembling the Tent Poles" in c.text]
    assert setup and setup[0].headings[:2] == ("Information about product item_number: 1", "User Guide")
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert all(c.indexed_text.startswith(c.heading) for c in chunks)


def test_japanese_sentences_split_at_japanese_stops():
    text = "返品は30日以内です。開封済みは不可！本当ですか？「はい。」と答えた。"
    pieces = split_sentences(text)
    assert [s for s, _ in pieces] == [
        "返品は30日以内です。",
        "開封済みは不可！",
        "本当ですか？",
        "「はい。」",
        "と答えた。",
    ]
    assert "".join(sep + s for s, sep in pieces) == text


def test_japanese_text_is_chunked_at_sentence_ends(embedder):
    sentence = "当社の家電製品には、お買い上げ日から一年間のメーカー保証が付いています。"
    doc = parse_bytes(("# 保証\n\n" + sentence * 30).encode(), "hoshou.md")
    chunks = chunk_document(doc, embedder.tokenizer, ChunkConfig(size=100, overlap=20, min_size=10))
    assert len(chunks) > 2
    for chunk in chunks:
        assert chunk.text.endswith("。")
        assert _tokens(embedder.tokenizer, chunk.text) <= 100


@pytest.mark.parametrize(
    "kwargs, field",
    [({"size": 8}, "size"), ({"overlap": 150}, "overlap"), ({"min_size": -1}, "min_size")],
)
def test_chunk_config_names_the_bad_field(kwargs, field):
    with pytest.raises(ConfigError, match=f"`{field}`"):
        ChunkConfig(**kwargs)


SETUP_GUIDE = """# Folding table guide

## Setting up the table

Follow these steps to set up the table:

### Step 1: Unfolding

1. Remove the table and its legs from the carrying bag.
2. Unfold the table by gently pulling the sides apart.
3. Make sure the tabletop locks into place.

### Step 2: Attaching the legs

1. Find the leg attachment points under the table.
2. Push each leg into its attachment point until it clicks.
3. Make sure the legs are fully extended and locked.

### Step 3: Adjusting the height

1. Find the height adjustment lever on each leg.
2. Set every leg to the same height and release the lever.

## Folding the table

1. Fold the legs in, starting with the one nearest the lever.
2. Fold the tabletop and put the table back in its bag.
3. Store the bag somewhere dry, away from direct sunlight.
"""


def test_a_section_whose_steps_are_subsections_stays_one_passage(embedder):
    """Cut at "Step 2", the first passage held Step 1 alone, and an answer quoted it as the
    whole procedure (high confidence: every word of it was in the documents). The next
    section, a sibling, still starts its own passage."""
    doc = parse_bytes(SETUP_GUIDE.encode(), "table.md")
    chunks = chunk_document(doc, embedder.tokenizer, ChunkConfig())
    setup = [c for c in chunks if "Unfold the table" in c.text]
    assert len(setup) == 1 and "until it clicks" in setup[0].text and "same height" in setup[0].text
    assert "Fold the legs in" not in setup[0].text
    assert any(c.text.startswith("Folding the table") for c in chunks)
    # A section too long to fit whole is still cut at its subsections.
    long_steps = SETUP_GUIDE.replace("3. Make sure the tabletop", "3. " + "Check the hinges. " * 40)
    chunks = chunk_document(parse_bytes(long_steps.encode(), "table.md"), embedder.tokenizer, ChunkConfig())
    assert any(c.text.startswith("Step 2: Attaching the legs") for c in chunks)
    # Text under the document's title does not make the whole document one section: a short
    # guide is not merged into one passage holding both procedures.
    with_intro = SETUP_GUIDE.replace(
        "# Folding table guide\n", "# Folding table guide\n\nRead this guide first.\n"
    )
    chunks = chunk_document(parse_bytes(with_intro.encode(), "table.md"), embedder.tokenizer, ChunkConfig())
    assert not any("Unfold the table" in c.text and "Fold the legs in" in c.text for c in chunks)
