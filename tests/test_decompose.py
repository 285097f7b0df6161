"""Multi-part questions: splitting, and retrieval per part finding what one retrieval misses."""

from __future__ import annotations

from collections import deque

import pytest

from assistant.answering.answer import AnswerConfig, answer_question
from assistant.answering.decompose import gather_passages, looks_multipart, rule_split, split_question
from knowledge.retrieve import RetrievalConfig


@pytest.mark.parametrize(
    ("question", "parts"),
    [
        (
            "How do I clean the RainGuard Hiking Jacket, and what is the temperature rating of the CozyNights Sleeping Bag?",
            [
                "How do I clean the RainGuard Hiking Jacket?",
                "What is the temperature rating of the CozyNights Sleeping Bag?",
            ],
        ),
        (
            "What is the warranty on the TrailMaster X4 Tent? Can I use the PowerBurner stove indoors?",
            ["What is the warranty on the TrailMaster X4 Tent?", "Can I use the PowerBurner stove indoors?"],
        ),
        ("1. How heavy is the tent?\n2. Is it waterproof?", ["How heavy is the tent?", "Is it waterproof?"]),
        ("返品はできますか？また、送料はいくらですか？", ["返品はできますか？", "送料はいくらですか？"]),
        (
            "How many people fit in the Alpine Explorer Tent?",
            ["How many people fit in the Alpine Explorer Tent?"],
        ),
        ("Is the stove safe and easy to clean?", ["Is the stove safe and easy to clean?"]),
    ],
)
def test_rule_split(question, parts):
    assert rule_split(question) == parts


def test_single_questions_are_not_split_and_the_model_is_not_asked():
    class NoModel:
        def stream(self, *args, **kwargs):
            raise AssertionError("a one-part question must not cost a generation")

    assert not looks_multipart("What is the capacity of the TrailMaster X4 Tent?")
    assert [
        p.text for p in split_question("What is the capacity of the TrailMaster X4 Tent?", NoModel())
    ] == ["What is the capacity of the TrailMaster X4 Tent?"]


def test_model_split_is_checked_against_the_question(chat_model):
    question = "Which fuel does the EcoFire Camping Stove use and how much does the TrailLite Daypack weigh?"
    parts = [p.text for p in split_question(question, chat_model)]
    assert len(parts) == 2
    assert "EcoFire" in parts[0] and "TrailLite" in parts[1]


def test_split_retrieval_finds_both_manuals(contoso_kb, chat_model):
    # Two FAQ questions from different manuals: retrieving each part finds both. (Since
    # passages hold whole short sections, one retrieval of this question finds both too; the
    # split's gain over one retrieval is measured by python -m bench.decomposition.)
    question = "What is the weight of the EcoFire Camping Stove, and how do I wash the Summit Breeze Jacket?"
    parts = split_question(question, chat_model)
    assert len(parts) == 2, parts
    split = {h.doc for h in gather_passages(contoso_kb, parts, RetrievalConfig(top_k=5))}
    eco, breeze = "product_info_6.md", "product_info_3.md"
    assert {eco, breeze} <= split, (parts, split)


def test_answer_reports_its_sub_questions(contoso_kb, chat_model):
    question = (
        "How many people fit in the TrailMaster X4 Tent? What is the price of the SkyView 2-Person Tent?"
    )
    answer = deque(
        answer_question(contoso_kb, chat_model, question, config=AnswerConfig(max_new_tokens=48)), maxlen=1
    )[0]
    assert len(answer.sub_questions) == 2
    docs = {h.doc for h in answer.passages}
    assert {"product_info_1.md", "product_info_15.md"} <= docs
    off = deque(
        answer_question(
            contoso_kb, chat_model, question, config=AnswerConfig(max_new_tokens=16, decompose=False)
        ),
        maxlen=1,
    )[0]
    assert off.sub_questions == []


def test_a_stop_during_retrieval_ends_the_answer_before_the_next_part(contoso_kb, monkeypatch):
    """Each part of a split question is one retrieval, which nothing interrupts: the stop is
    checked between them, and a stopped answer is neither finished nor recorded."""
    import threading

    from assistant.answering import decompose

    stop, asked = threading.Event(), []
    real = decompose.retrieve

    def retrieve_then_stop(kb, query, *args, **kwargs):
        asked.append(query)
        stop.set()  # the client cancelled while this part was retrieved
        return real(kb, query, *args, **kwargs)

    monkeypatch.setattr(decompose, "retrieve", retrieve_then_stop)
    parts = ["What is the warranty on the TrailMaster X4 Tent?", "Can I use the PowerBurner stove indoors?"]
    assert gather_passages(contoso_kb, parts, RetrievalConfig()) and len(asked) == 3
    asked.clear()
    stop.clear()
    assert gather_passages(contoso_kb, parts, RetrievalConfig(), stop=stop)
    assert len(asked) == 1, "retrieval went on after the stop"
    asked.clear()
    assert gather_passages(contoso_kb, parts, RetrievalConfig(), stop=stop) == [] and not asked
    config = AnswerConfig(decompose=False)
    states = list(answer_question(contoso_kb, None, parts[0], config=config, stop=stop))
    # One unfinished state: callers read the last one, and only a finished one is recorded.
    assert len(states) == 1 and not states[0].done, "a stopped answer went on past its retrieval"
