"""Evaluation metrics on small hand-checked cases, and evaluation sets from files."""

from __future__ import annotations

import pytest

from assistant.answering.prompt import is_abstention
from assistant.evaluation.metrics import answer_tokens, exact_match, score_item, summarize, token_f1
from assistant.evaluation.runs import differences
from assistant.evaluation.sets import EvalItem, EvalSet, EvalSetStore, load_eval_set
from knowledge.errors import ParseError
from tests.conftest import DATA


def test_tokens_ignore_case_punctuation_articles_and_citations():
    assert answer_tokens("The tent is GREEN! [1]") == ["tent", "is", "green"]
    assert answer_tokens("返品は30日以内です。") == ["返", "品", "は", "3", "0", "日", "以", "内", "で", "す"]


def test_token_f1_by_hand():
    # prediction: [tent, has, two, doors] ; reference: [tent, has, three, doors, and, fly]
    # common 3 -> precision 3/4, recall 3/6 -> F1 = 2 * .75 * .5 / 1.25 = 0.6
    assert token_f1("The tent has two doors.", "The tent has three doors and a fly.") == pytest.approx(0.6)
    assert token_f1("nothing alike", "completely different") == 0.0
    assert token_f1("A warranty of 2 years [1].", "warranty of 2 years") == 1.0
    # Japanese by characters: 返品は30日以内 (8) against 返品は14日以内 (8): common 返品は日以内 = 6 -> 0.75
    assert token_f1("返品は30日以内", "返品は14日以内") == pytest.approx(0.75)


def test_exact_match_and_abstention():
    assert exact_match("Yes, 2 years.", "yes 2 years")
    assert not exact_match("Yes, 2 years.", "yes 3 years")
    assert is_abstention("The documents in this knowledge base do not cover this question.")
    assert is_abstention("ご質問の内容は、このナレッジベースの資料には記載されていません。")
    assert not is_abstention("The tent covers four people [1].")


def test_a_source_without_its_extension_names_the_document():
    from assistant.evaluation.metrics import holds_answer

    assert holds_answer("Manual.pdf", "text", source="manual")
    assert holds_answer("manual.pdf", "text", source="Manual.PDF")
    assert not holds_answer("manual-2.pdf", "text", source="manual")


ITEMS = [
    EvalItem("Q1", "The tent sleeps four people.", "tent.md"),
    EvalItem("Q2", "Returns within 30 days.", ""),
    EvalItem("Q3", unanswerable=True),
    EvalItem("Q4", unanswerable=True),
]
PASSAGES = [("boots.md", "Boots are waterproof."), ("tent.md", "The tent sleeps four people and their gear.")]


def test_summary_by_hand():
    results = [
        # Source found at rank 2; cites [1] (wrong doc) and [2] (right doc): precision 1/2; F1 1.0
        score_item(ITEMS[0], "The tent sleeps four people [2][1].", PASSAGES, [2, 1], True, 1.0),
        # Answer text appears in passage 1 of its list (recall 3/4 of 'returns within 30 days' >= 0.6)
        score_item(
            ITEMS[1],
            "You can return it within 30 days [1].",
            [("policy.md", "Returns: within 30 days.")],
            [1],
            True,
            3.0,
        ),
        score_item(ITEMS[2], "The documents do not cover this question.", [], [], False, 0.5),
        score_item(ITEMS[3], "It costs 12 dollars [1].", PASSAGES, [1], True, 2.0),
    ]
    m = summarize(results)
    assert (m["questions"], m["answerable"], m["unanswerable"]) == (4, 2, 2)
    assert m["retrieval_recall"] == 1.0
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 1) / 2)
    # Q2: [you, can, return, it, within, 30, days] vs [returns, within, 30, days]: common 3 -> P 3/7, R 3/4
    q2_f1 = 2 * (3 / 7) * (3 / 4) / (3 / 7 + 3 / 4)
    assert m["f1"] == pytest.approx((1.0 + q2_f1) / 2)
    assert m["exact_match"] == 0.5
    assert m["citation_precision"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["abstention_accuracy"] == 0.5 and m["false_abstention"] == 0.0
    assert m["latency_p50_s"] == pytest.approx(1.5)
    assert m["latency_p95_s"] == pytest.approx(2.0 + 0.85 * 1.0)


def test_closed_book_runs_have_no_retrieval_metrics():
    result = score_item(ITEMS[0], "Four people.", None, [], True, 1.0)
    m = summarize([result])
    assert m["retrieval_recall"] is None and m["mrr"] is None and m["citation_precision"] is None
    assert m["abstention_accuracy"] is None
    assert m["f1"] == pytest.approx(
        2 * 1.0 * 0.5 / 1.5
    )  # [four, people] against [tent, sleeps, four, people]


def test_eval_set_from_file_and_store(tmp_path):
    evalset = load_eval_set(DATA / "eval" / "contoso-eval.csv", "contoso")
    assert len(evalset.items) == 99
    assert sum(i.unanswerable for i in evalset.items) == 10
    assert evalset.items[0].source == "product_info_1.md" and evalset.items[0].expected
    store = EvalSetStore(tmp_path)
    store.save(evalset)
    assert store.names() == ["contoso"] and store.get("contoso").items == evalset.items

    bad = tmp_path / "bad.csv"
    bad.write_text("prompt_text,reply_text\nq,a\n")
    with pytest.raises(ParseError, match="no question column"):
        load_eval_set(bad)
    jsonl = tmp_path / "set.jsonl"
    jsonl.write_text(
        '{"question": "q1", "answer": "a1"}\n{"question": "q2", "unanswerable": true}\n{"question": "q3"}\n'
    )
    assert load_eval_set(bad.with_name("set (copy).jsonl"), data=jsonl.read_bytes()).name == "set -copy"
    loaded = load_eval_set(jsonl)
    assert [i.unanswerable for i in loaded.items] == [False, True] and loaded.skipped == [3]


def test_differences_rank_the_questions_that_changed_most():
    from assistant.evaluation.runs import EvalConfig, EvalRun

    def run(answers):
        results = [score_item(item, a, None, [], True, 1.0) for item, a in zip(ITEMS[:2], answers)]
        return EvalRun("r", "s", EvalConfig(kb="k"), summarize(results), results, "now")

    rows = differences([run(["The tent sleeps four people.", "No idea"]), run(["Boots.", "No idea"])])
    assert [r["question"] for r in rows] == ["Q1"] and rows[0]["spread"] == 1.0
    assert rows[0]["answers"] == ["The tent sleeps four people.", "Boots."]


def test_set_names_are_checked(tmp_path):
    with pytest.raises(Exception, match="not a usable evaluation set name"):
        EvalSetStore(tmp_path).save(EvalSet("../escape", [EvalItem("q", "a")]))
