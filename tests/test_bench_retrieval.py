"""The retrieval-quality benchmark's own parts: its hit rule, its textbook rankers, its scores."""

from __future__ import annotations

import pytest

from bench.retrieval_quality import Okapi, _tokens, is_hit, rrf, scores_of


def test_a_hit_is_the_gold_document_holding_the_answer():
    english = {"doc": "tent.md", "a": "The tent sleeps four people."}
    assert is_hit("tent.md", "The tent sleeps four adults.", english)  # 4 of its 5 words
    assert not is_hit("tent.md", "It weighs four kilograms.", english)
    assert not is_hit("stove.md", "The tent sleeps four people.", english), "another document"
    japanese = {"doc": "0001.txt", "a": "聖武天皇"}
    assert is_hit("0001.txt", "盧舎那仏は聖武 天皇の発願による。", japanese)
    assert not is_hit("0001.txt", "盧舎那仏は天皇の発願による。", japanese)
    # A span of a Japanese paragraph that holds no Japanese is still a span.
    height = {"doc": "0002.txt", "q": "竜虎山の最高峰は何mですか?", "a": "401.1m"}
    assert is_hit("0002.txt", "最高峰は401.1mである。", height)
    assert not is_hit("0002.txt", "最高峰は401mである。", height)


def test_textbook_rankers_order_as_expected():
    docs = ["the tent sleeps four people", "the stove boils water fast", "tents and stoves for camping"]
    bm25 = Okapi([_tokens(d, False) for d in docs])
    assert list(bm25.scores(_tokens("stove water", False)).argsort()[::-1][:1]) == [1]
    assert _tokens("奈良の大仏", True) == ["奈良", "良の", "の大", "大仏"]
    # Reciprocal-rank fusion: an item in both rankings beats one first in only one.
    assert rrf([0, 1], [1, 2]) == [1, 0, 2]


def test_scores_count_the_first_hit():
    s = scores_of([[True, False], [False, True], [False] * 10, [False] * 5 + [True]])
    assert s["recall@1"] == pytest.approx(1 / 4)
    assert s["recall@5"] == pytest.approx(2 / 4)
    assert s["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 6) / 4)


def test_the_alternative_fusions_behave_as_their_textbooks_say():
    from bench.retrieval_quality import score_fusion, sharpness, weighted_rrf

    # Per-query weights: a ranking whose scores fall sharply outweighs a flat one.
    sharp = [(10, 30.0), (11, 12.0), (12, 8.0), (13, 2.0)]
    flat = [(20, 0.48), (21, 0.47), (22, 0.47), (23, 0.46)]
    assert sharpness([s for _, s in sharp]) > 0.9 > 0.1 > sharpness([s for _, s in flat]) >= 0.05
    assert weighted_rrf(flat, sharp)[0] == 10
    assert weighted_rrf(sharp, flat)[0] == 10
    # Score fusion: scores, not ranks, decide; a passage only one side found gets 0 from the other.
    dense = [(1, 0.9), (2, 0.8), (3, 0.1)]
    lexical = [(3, 20.0), (2, 19.0), (4, 1.0)]
    assert score_fusion(dense, lexical)[0] == 2  # (0.875 + 0.947) / 2 beats 1 (0.5) and 3 (0.5)
    assert score_fusion(dense, lexical, alpha=1.0)[0] == 1
    assert score_fusion(dense, lexical, alpha=0.0)[0] == 3
    assert score_fusion([], lexical) == [3, 2, 4]


def test_the_looser_hit_takes_the_answer_from_any_document_for_span_answers_only():
    from bench.retrieval_quality import _first_holds

    japanese = {"doc": "0001.txt", "a": "顕彰馬"}
    # Another paragraph stating the same fact: a miss for the strict hit, a hit for the looser.
    assert not is_hit("0002.txt", "1990年に顕彰馬に選定された。", japanese)
    assert _first_holds(["1990年に顕彰馬に選定された。", "x"], japanese) is True
    assert _first_holds(["別の段落。", "顕彰馬"], japanese) is False, "only the first passage counts"
    assert _first_holds([], japanese) is False
    assert _first_holds(["The tent sleeps four."], {"doc": "t.md", "a": "four"}) is None
    s = scores_of([[False], [False], [True]], [True, False, True])
    assert s["recall@1 any document"] == pytest.approx(2 / 3)
    assert "recall@1 any document" not in scores_of([[True]], [None])


def test_a_kept_knowledge_base_cut_into_other_passages_is_ingested_again(tmp_path):
    from bench.retrieval_quality import _fresh
    from knowledge.chunk import ChunkConfig
    from knowledge.library import Library

    class App:
        library = Library(tmp_path)

    App.library.create("old", chunking=ChunkConfig(size=200, overlap=40))
    App.library.create("same", chunking=ChunkConfig())
    _fresh(App, "old", ChunkConfig())
    _fresh(App, "same", ChunkConfig())
    assert App.library.names() == ["same"]
