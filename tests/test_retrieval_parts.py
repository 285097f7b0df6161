"""The parts behind retrieval's defaults: how passages are measured, what BM25 indexes for
Japanese, how an older index is brought up to date, and the optional cross-encoder."""

from __future__ import annotations

import random
import sqlite3

import numpy as np
import pytest

from knowledge.chunk import CHARS_PER_TOKEN, ChunkConfig, chunk_document
from knowledge.errors import ConfigError
from knowledge.ingest import Source, ingest_files
from knowledge.lexical import TERMS_VERSION, content_terms, index_terms, terms
from knowledge.parse import parse_bytes
from knowledge.retrieve import RetrievalConfig, retrieve
from knowledge.store import KnowledgeBase
from tests.conftest import drain, tiny_bert_config

KANJI = "日本語学校東京大阪電源設定画面表示時間料金会員登録返品交換配送注文確認番号"


def _paragraph(seed: int, sentences: int) -> str:
    rng = random.Random(seed)
    return "".join(
        "".join(rng.choice(KANJI) for _ in range(rng.randint(20, 40))) + "。" for _ in range(sentences)
    )


def test_japanese_the_embedder_cannot_read_is_measured_in_characters(embedder):
    """All-MiniLM spends a token per kanji: measured by its tokens, a 600-character paragraph
    was cut into three passages; at four characters a token it stays whole."""
    text = _paragraph(1, 20)
    assert 500 < len(text) < 4 * ChunkConfig().size
    doc = parse_bytes(text.encode(), "para.txt")
    assert len(chunk_document(doc, embedder.tokenizer, ChunkConfig(), embedder.reads)) == 1
    by_tokens = chunk_document(doc, embedder.tokenizer, ChunkConfig())
    assert len(by_tokens) >= 3
    # Longer text is still cut, at the same character budget.
    long = parse_bytes(_paragraph(2, 80).encode(), "long.txt")
    chunks = chunk_document(long, embedder.tokenizer, ChunkConfig(), embedder.reads)
    assert len(chunks) > 1
    assert all(len(c.text) <= CHARS_PER_TOKEN * ChunkConfig().size for c in chunks)


def test_a_short_answer_is_never_cut_in_two(embedder):
    """Every span of up to 40 characters lies whole in some passage, for sentences that fit
    and for a run-on one cut into windows, in text the embedder reads and text it does not."""
    english = " ".join(f"Part {i} of the manual explains setting {i} in detail." for i in range(200))
    run_on = "".join(random.Random(3).choice(KANJI) for _ in range(3000))  # no sentence end at all
    for text in (english, _paragraph(4, 120), run_on, "Model X" + " and model Y" * 600):
        chunks = chunk_document(
            parse_bytes(text.encode(), "doc.txt"), embedder.tokenizer, ChunkConfig(), embedder.reads
        )
        assert len(chunks) > 1
        joined = [c.text.replace("\n", "") for c in chunks]
        flat = text.replace("\n", "")
        missing = [s for s in range(0, len(flat) - 40, 7) if not any(flat[s : s + 40] in j for j in joined)]
        assert not missing, (text[:30], flat[missing[0] : missing[0] + 40])


def test_a_heading_starts_a_passage_once_the_current_one_holds_min_size(embedder):
    sections = "\n\n".join(f"## Step {i}\n\nTurn dial {i} to position {i} and wait." for i in range(12))
    doc = parse_bytes(f"# Setup\n\n{sections}".encode(), "setup.md")
    merged = chunk_document(doc, embedder.tokenizer, ChunkConfig(min_size=112), embedder.reads)
    assert 1 < len(merged) < 12, "short sections travel together"
    assert all(c.tokens >= 112 for c in merged[:-1])
    default = chunk_document(doc, embedder.tokenizer, ChunkConfig(), embedder.reads)
    assert ChunkConfig().min_size == 50 and len(default) > len(merged)


def test_japanese_index_terms_add_words_and_cross_script_bigrams():
    text = "ドイツ語の本を書いた。附属のケーブル"
    plain, indexed = terms(text), index_terms(text)
    assert set(plain) <= set(indexed)
    assert {"ツ語", "書い"} <= set(indexed) - set(plain), "bigrams across a script change"
    assert {"ドイツ", "書く", "付属"} <= set(indexed), "dictionary words, normalised (附属 is written 付属)"
    assert "の" not in set(indexed) - set(plain), "particles are not words worth indexing"
    assert index_terms("Reset the VPN") == terms("Reset the VPN"), "English is unchanged"


def _kb(library, name: str, files: dict[str, str]) -> KnowledgeBase:
    kb = library.create(name)
    folder = library.root.parent / f"{name}-files"
    folder.mkdir()
    sources = []
    for file_name, text in files.items():
        (folder / file_name).write_text(text, "utf-8")
        sources.append(Source(folder / file_name, file_name))
    drain(ingest_files(kb, sources))
    return kb


CABLES = {
    "a-separate.md": "別売りのケーブルを使ってください。",
    "b-included.md": "付属のケーブルを使ってください。電源を入れる前に、差し込みがしっかりしているか確かめます。",
}


@pytest.mark.parametrize(
    "question, kept, left_out",
    [
        ("返品は何日以内ならできますか？", ["返品", "以内"], ["何日"]),
        ("誰が作りましたか", [], ["誰"]),
        ("幾らですか", [], ["幾"]),
        # A name holding 幾 names something: a question about 幾田 is not about any 担当製品,
        # and without the name it would be answered as one.
        ("幾田さんの担当製品は何個ですか", ["幾田", "製品"], ["何個"]),
        ("明治何年に開かれましたか", ["明治"], ["治何", "何年"]),
    ],
)
def test_a_japanese_question_word_is_not_a_content_term(question, kept, left_out):
    found = content_terms(terms(question))
    assert all(t in found for t in kept) and not any(t in found for t in left_out), found


def test_a_spelling_variant_finds_its_passage_through_the_dictionary(library, embedder):
    """附属 and 付属 share no bigram: only the dictionary's normalised form joins them. Without
    it the shorter passage, which says the cable is sold separately, ranks first."""
    kb = _kb(library, "cables", CABLES)
    hits = retrieve(kb, "附属のケーブルはどれ？", RetrievalConfig(mode="lexical", cutoff=False))
    assert [h.doc for h in hits][:1] == ["b-included.md"]
    bigrams_only = retrieve(kb, "のケーブルはどれ？", RetrievalConfig(mode="lexical", cutoff=False))
    assert bigrams_only[0].doc == "a-separate.md", "the question without 附属 prefers the shorter passage"


def test_an_index_written_by_the_older_analyser_is_refreshed_on_opening(library, embedder):
    kb = _kb(library, "older", CABLES)
    db = sqlite3.connect(kb.folder / "store.sqlite")
    with db:  # as an earlier version wrote it: bigrams only, and no version recorded
        for rowid, heading, text in db.execute("SELECT id, heading, text FROM chunks").fetchall():
            db.execute(
                "UPDATE chunks_fts SET terms=? WHERE rowid=?", (" ".join(terms(f"{heading}\n{text}")), rowid)
            )
        db.execute("DELETE FROM meta WHERE key='terms'")
    db.close()
    kb.close()
    reopened = KnowledgeBase(kb.folder)
    rows = reopened._db.execute(
        "SELECT c.heading, c.text, f.terms FROM chunks c JOIN chunks_fts f ON f.rowid=c.id"
    )
    for heading, text, stored in rows.fetchall():
        assert stored.split() == index_terms(f"{heading}\n{text}" if heading else text)
        assert "差し込む" in stored.split() or "使う" in stored.split(), "dictionary words are indexed again"
    assert reopened.get_meta("terms") == str(TERMS_VERSION)


# -- the optional cross-encoder ------------------------------------------------------------


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory, embedder):
    """A small random cross-encoder saved in a local folder: its scores mean nothing, but it
    loads, scores and orders like any other."""
    import torch
    from transformers import BertForSequenceClassification

    folder = tmp_path_factory.mktemp("cross-encoder")
    torch.manual_seed(0)
    assert embedder.tokenizer.vocab_size == tiny_bert_config().vocab_size
    BertForSequenceClassification(tiny_bert_config(num_labels=1)).save_pretrained(folder)
    embedder.tokenizer.save_pretrained(folder)
    return folder


def test_a_cross_encoder_reorders_the_first_candidates(contoso_kb, cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    question = "How do I clean the stove after cooking?"
    fused = retrieve(contoso_kb, question, RetrievalConfig(top_k=8, cutoff=False))
    config = RetrievalConfig(top_k=8, cutoff=False, rerank_model=str(cross_encoder_dir), rerank_depth=8)
    reranked = retrieve(contoso_kb, question, config)
    assert all(h.rerank is None for h in fused)
    assert {h.chunk_id for h in reranked} == {h.chunk_id for h in fused}, "the same candidates, reordered"
    # Scored independently by the same model over the same text, the order follows the scores.
    model = CrossEncoder(str(cross_encoder_dir), device="cpu")
    expected = model.predict([(question, f"{h.heading}\n{h.text}" if h.heading else h.text) for h in fused])
    by_id = {h.chunk_id: float(s) for h, s in zip(fused, expected)}
    assert [h.chunk_id for h in reranked] == sorted(by_id, key=lambda i: -by_id[i])
    assert [h.chunk_id for h in reranked] != [h.chunk_id for h in fused], "the model's order is its own"
    assert all(h.rerank == pytest.approx(by_id[h.chunk_id], abs=1e-4) for h in reranked)
    assert reranked[0].to_json()["rerank"] is not None


def test_a_cross_encoder_reads_what_a_follow_up_points_back_to(contoso_kb, cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    context, question = ["Tell me about the TrailMaster X4 Tent."], "How much does it weigh?"
    config = RetrievalConfig(top_k=8, cutoff=False, rerank_model=str(cross_encoder_dir), rerank_depth=8)
    reranked = retrieve(contoso_kb, question, config, context=context)
    model = CrossEncoder(str(cross_encoder_dir), device="cpu")
    texts = [f"{h.heading}\n{h.text}" if h.heading else h.text for h in reranked]
    joined = dict(zip(texts, model.predict([(f"{context[-1]} {question}", t) for t in texts])))
    alone = dict(zip(texts, model.predict([(question, t) for t in texts])))
    # "it" alone names nothing: the model reads the question with the turn it points back to.
    # (The random model's scores differ in the sixth decimal: the orders tell them apart.)
    assert texts == sorted(texts, key=lambda t: -joined[t])
    assert texts != sorted(texts, key=lambda t: -alone[t])


def test_a_cross_encoder_orders_a_new_topic_in_a_conversation(contoso_kb, cross_encoder_dir):
    """A question searched alone and with the turn before keeps the model's order: breaking
    the fusion's ties after it would put the fused order back."""
    question, context = (
        "Is there a warranty on the TrailMaster X4 Tent?",
        ["How do I wash the RainGuard jacket?"],
    )
    config = RetrievalConfig(top_k=8, cutoff=False, rerank_model=str(cross_encoder_dir), rerank_depth=8)
    hits = retrieve(contoso_kb, question, config, context=context)
    assert len(hits) == 8 and all(h.rerank is not None for h in hits)
    for relevant in (True, False):  # without the cut-off, the relevant come first
        scores = [h.rerank for h in hits if h.relevant is relevant]
        assert scores == sorted(scores, reverse=True), scores


def test_the_deployment_setting_reaches_search_and_a_missing_model_is_one_sentence(
    tmp_path, cross_encoder_dir, embedder
):
    from assistant.config import Settings
    from assistant.serving.service import Tsumugi

    app = Tsumugi(Settings(data_dir=tmp_path / "data", rerank_model=str(cross_encoder_dir)))
    drain(app.ingest("cables", [_files(tmp_path, CABLES)]))
    assert all(
        h.rerank is not None for h in app.search("cables", "付属のケーブル", RetrievalConfig(cutoff=False))
    )
    plain = Tsumugi(Settings(data_dir=tmp_path / "data"))
    assert all(
        h.rerank is None for h in plain.search("cables", "付属のケーブル", RetrievalConfig(cutoff=False))
    )
    missing = RetrievalConfig(rerank_model=str(tmp_path / "no-such-model"))
    with pytest.raises(ConfigError, match="could not be loaded") as info:
        plain.search("cables", "付属のケーブル", missing)
    assert str(info.value).count(". ") <= 1


def _files(root, files: dict[str, str]):
    folder = root / "upload"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, "utf-8")
    return folder


def test_the_embedders_cache_gives_the_same_vectors_and_skips_texts_it_has_seen(embedder):
    texts = ["The tent sleeps four.", "Wash the jacket cold.", "The tent sleeps four."]
    plain = embedder.encode(texts)
    before = embedder.encoded
    first = embedder.encode_cached(texts)
    assert embedder.encoded - before == 2  # the repeated text once
    assert np.allclose(first, plain, atol=1e-5)
    again = embedder.encode_cached(["Wash the jacket cold.", "A new sentence about boots."])
    assert embedder.encoded - before == 3  # only the new one reached the model
    assert np.allclose(again[0], plain[1], atol=1e-5)
    assert embedder.encode_cached([]).shape == (0, embedder.dim)


def test_the_embedder_in_bf16_keeps_the_fp32_vectors_and_first_passages():
    """bf16 products (the default on CPUs that compute bf16 natively) give the fp32 vectors to
    a cosine above 0.999, and each question the same first passage."""
    import torch

    from knowledge.embed import DEFAULT_EMBED_MODEL, Embedder

    passages = [
        "Print jobs are held until you tap your badge on any office printer.",
        "Colour printing is available on the second floor.",
        "Laptops are replaced every four years.",
        "Report a stolen laptop to security within 24 hours and file a police report.",
        "Meals while travelling are reimbursed up to 60 dollars per day.",
        "Economy class is required for flights under six hours.",
        "返品は商品到着後30日以内に受け付けます。",
    ]
    questions = ["Where can I print in colour?", "Someone took my notebook computer", "How much for food?"]
    fp32 = Embedder(DEFAULT_EMBED_MODEL, precision="fp32")
    bf16 = Embedder(DEFAULT_EMBED_MODEL, precision="bf16")
    assert bf16.bf16 and not fp32.bf16
    linear = next(m for m in bf16.model.modules() if isinstance(m, torch.nn.Linear))
    assert linear.weight.dtype == torch.bfloat16, "cast once, not by autocast on every call"
    exact, fast = fp32.encode(passages + questions), bf16.encode(passages + questions)
    assert not np.array_equal(exact, fast)  # the products did run in bf16
    assert (exact * fast).sum(axis=1).min() > 0.999
    n = len(passages)
    for q in range(n, n + len(questions)):
        assert np.argmax(exact[:n] @ exact[q]) == np.argmax(fast[:n] @ fast[q])
    with pytest.raises(ConfigError, match="precision should be one of auto, bf16, fp32"):
        Embedder(DEFAULT_EMBED_MODEL, precision="fp16")
