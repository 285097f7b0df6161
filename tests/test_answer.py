"""Grounded answers with the real embedded model."""

from __future__ import annotations

import pytest

from assistant.answering.answer import AnswerConfig, answer_question
from assistant.answering.citations import drop_repeats, fix_citations
from assistant.answering.prompt import NOT_COVERED
from knowledge.retrieve import Hit
from knowledge.text import strip_citations


def _hit(n: int, text: str) -> Hit:
    return Hit(chunk_id=n, doc=f"doc{n}.md", page=None, heading="", text=text, score=1.0)


def test_fix_citations_drops_invalid_marks_and_attributes_uncited_sentences():
    hits = [
        _hit(1, "The tent weighs 12 lbs and packs into a carry bag."),
        _hit(2, "Warranty lasts two years."),
    ]
    fixed = fix_citations("The tent weighs 12 lbs [7]. Warranty lasts two years [2].", hits)
    assert "[7]" not in fixed
    assert fixed == "The tent weighs 12 lbs [1]. Warranty lasts two years [2]."
    assert fix_citations("Something else entirely.", hits) == "Something else entirely."


def test_strip_citations():
    assert strip_citations("Two years [1]. Free returns [2][3].") == "Two years. Free returns."


def test_drop_repeats():
    assert drop_repeats("It is green. It is green. It has two doors.") == "It is green. It has two doors."
    assert drop_repeats("Size 12x12x12x12x12x12") == "Size 12x"


@pytest.mark.slow
def test_answer_cites_a_passage_of_the_right_manual(contoso_kb, chat_model):
    updates = list(
        answer_question(
            contoso_kb,
            chat_model,
            "Is there a warranty on the TrailMaster X4 Tent?",
            config=AnswerConfig(max_new_tokens=96, style="detailed"),
        )
    )
    steps, answer = len(updates), updates[-1]
    assert steps > 3 and answer.done and answer.covered
    assert answer.cited, answer.text
    assert all(1 <= n <= len(answer.passages) for n in answer.cited)
    assert answer.passages[answer.cited[0] - 1].doc == "product_info_1.md"
    assert "warranty" in answer.text.lower()
    data = answer.to_json()
    assert data["citations"][0]["doc"] == "product_info_1.md"


@pytest.mark.slow
@pytest.mark.parametrize(
    "question, lang", [("What is the capital of France?", "en"), ("日本の首都はどこですか？", "ja")]
)
def test_unrelated_question_is_not_covered(contoso_kb, chat_model, question, lang):
    *_, answer = answer_question(contoso_kb, chat_model, question)
    assert not answer.covered and answer.text == NOT_COVERED[lang] and answer.passages == []
    # A Japanese question on English manuals is told why, in Japanese: the English-only
    # embedder cannot match across languages, so "not in the documents" alone would mislead.
    assert ("別の言語で書かれている" in answer.notice) == (lang == "ja"), answer.notice


@pytest.mark.slow
def test_a_question_in_the_documents_language_is_not_told_to_change_it(library, chat_model, embedder):
    """On Japanese documents, an unrelated Japanese question is not covered, and no notice
    about the language: its words occur in the documents."""
    from knowledge.ingest import collect_sources, ingest_files
    from tests.conftest import DATA, drain

    kb = library.create("shop")
    drain(ingest_files(kb, collect_sources([DATA / "ja-support"])))
    *_, answer = answer_question(kb, chat_model, "日本の首都はどこですか？")
    assert not answer.covered and answer.notice == "", answer.notice


@pytest.mark.slow
def test_follow_up_question_uses_history(contoso_kb, chat_model):
    history = [("Tell me about the TrailMaster X4 Tent", "It is a 4-person tent [1].")]
    *_, answer = answer_question(
        contoso_kb, chat_model, "How much does it weigh?", history, AnswerConfig(max_new_tokens=48)
    )
    assert answer.covered and answer.passages[0].doc == "product_info_1.md"


def test_an_answer_without_the_hours_asked_for_says_so_in_japanese(support_sets):
    """The manual names KAMADO-5 but says nothing of keeping rice warm: its 5.5合 is a number of
    another kind, so the answer does not say how many hours, and the asker is told so."""
    from assistant.answering import confidence as conf

    kb, _ = support_sets["ja-support"]
    question = "KAMADO-5の保温は何時間までできますか？"
    *_, answer = answer_question(kb, None, question, config=AnswerConfig(style="quote"))
    assert answer.covered and "KAMADO-5" in answer.text, answer.text
    assert answer.confidence <= conf.NO_NUMBER and answer.needs_review, answer.confidence
    assert "数値がありません" in answer.notice, answer.notice


def test_a_question_that_names_nothing_is_answered_from_the_turn_before(support_sets):
    """'どうすればいいですか？' after an error report: the evidence is chosen for the report
    with it; chosen for the bare question, the quote was the rice cooker's cleaning sentences."""
    kb, _ = support_sets["ja-support"]
    history = [("KAMADO-5の画面にE01と表示されました。", "")]
    *_, answer = answer_question(kb, None, "どうすればいいですか？", history, AnswerConfig(style="quote"))
    assert answer.covered and "E01" in answer.text and "たわし" not in answer.text, answer.text
