"""Evidence-first answers: every sentence shown is supported by the passage it cites."""

from __future__ import annotations

import re
from collections import deque

import pytest

from assistant.answering import confidence as conf
from assistant.answering.answer import AnswerConfig, answer_question
from assistant.answering.evidence import Evidence, SupportCheck, select, supported
from knowledge.retrieve import Hit
from knowledge.text import CITATION, LIST_MARKER, sentences, split_sentences

PHONE_MANUAL = """# Nimbus phone user guide

## Dark mode
To turn on dark mode, open Settings > Display > Theme and choose Dark. The screen switches at once.

## Contact groups
You can add or remove contacts from a group at any time. Open Contacts, select the group and tap Edit.

## Battery
The battery lasts up to 18 hours of video playback. A full charge takes 95 minutes with the supplied charger.

## Adding a book to the library
1. Open the Reader app.
2. Tap the plus sign in the top corner.
3. Choose the file from Downloads.
4. The book appears on the shelf.
"""


def _hit(n: int, text: str, doc: str = "guide.md") -> Hit:
    return Hit(chunk_id=n, doc=doc, page=None, heading="", text=text, score=1.0)


@pytest.fixture(scope="module")
def phone_kb(tmp_path_factory, embedder):
    from knowledge.ingest import collect_sources, ingest_files
    from knowledge.library import Library

    folder = tmp_path_factory.mktemp("phone-docs")
    (folder / "nimbus-guide.md").write_text(PHONE_MANUAL, encoding="utf-8")
    (folder / "returns.md").write_text(
        "# Returns\n\nUnopened items can be returned within 30 days for a full refund. "
        "Opened items are exchanged only when faulty.\n",
        encoding="utf-8",
    )
    kb = Library(tmp_path_factory.mktemp("phone")).create("phone")
    deque(ingest_files(kb, collect_sources([folder])), maxlen=0)
    return kb


def test_one_sentence_splitter_keeps_text_and_splits_both_scripts():
    text = "Open Settings. Tap Display!\n返品できます。送料は無料です。"
    assert sentences(text) == ["Open Settings.", "Tap Display!", "返品できます。", "送料は無料です。"]
    assert "".join(sep + s for s, sep in split_sentences(text)) == text


def test_support_needs_numbers_paths_and_polarity_from_the_passage(embedder):
    passage = PHONE_MANUAL
    assert supported("Open Settings > Display > Theme and choose Dark.", passage, embedder)
    assert not supported("Open Settings > Privacy > Theme and choose Dark.", passage, embedder)
    assert supported("A full charge takes 95 minutes.", passage, embedder)
    assert not supported("A full charge takes 45 minutes.", passage, embedder)
    assert not supported("No, it is not possible to add or remove contacts from a group.", passage, embedder)
    assert not supported("Tap the 'Add to Library' button.", passage, embedder)


def test_invented_steps_are_removed_and_real_ones_kept(embedder):
    hits = [_hit(1, PHONE_MANUAL)]
    evidence = select("How do I add a book to the library?", hits, embedder)
    check = SupportCheck(hits, evidence, embedder)
    # What the embedded model wrote for such a question on a held-out manual.
    for sentence in [
        "1. Open the user manual.",
        "2. Tap the 'Add to Library' button.",
        "Open the Reader app [1].",
    ]:
        check.add(sentence)
    shown = check.text(False)
    assert "user manual" not in shown and "Add to Library" not in shown
    assert shown == "Open the Reader app [1]."
    assert check.result.kept == 1 and check.result.written == 3 and check.result.removed == 2


def test_a_procedure_is_quoted_whole(embedder):
    hits = [_hit(1, PHONE_MANUAL)]
    evidence = select("How do I add a book to the library?", hits, embedder)
    text = evidence.quote(False)
    for step in (
        "1. Open the Reader app.",
        "2. Tap the plus sign",
        "3. Choose the file",
        "4. The book appears",
    ):
        assert step in text, text
    assert CITATION.search(text)


TENT_SHEET = """Information about product item_number: 1

TrailMaster X4 Tent, price $250,

Brand

OutdoorLiving

Technical Specs

**Capacity**: 4-person
**Waterproof**: Yes
**Weight**: 12 lbs
"""
TENT_REVIEWS = """Reviews

1) **Rating:** 5
**Review:** I am extremely happy with my TrailMaster X4 Tent! It's spacious and easy to set up.
2) **Rating:** 4
**Review:** The TrailMaster X4 Tent is a fantastic investment for any serious camper.
"""


@pytest.mark.parametrize(
    "question, fact",
    [
        ("What is the price of the TrailMaster X4 Tent?", "$250"),
        ("Is the tent waterproof?", "Waterproof: Yes"),
        ("What is its capacity?", "Capacity: 4-person"),
    ],
)
def test_a_short_line_that_states_a_value_is_evidence_not_a_title(embedder, question, fact):
    """Spec lines and a product's price line are short and end in no full stop, like the
    titles kept in a passage's text, and were skipped as titles: the reviews that name the
    product were quoted instead, at medium confidence. Titles themselves stay out."""
    evidence = select(question, [_hit(1, TENT_REVIEWS), _hit(2, TENT_SHEET)], embedder)
    text = evidence.quote(False)
    assert fact in text, text
    assert "Technical Specs" not in text and "OutdoorLiving" not in text


def test_which_short_lines_state_a_value():
    from assistant.answering.evidence import _looks_like_heading, _states_value

    for fact in ("Weight: 2.5 lbs", "Rated 4.8 out of 5", "price $250,", "重量：12kg", "Waterproof: Yes"):
        assert _states_value(fact), fact
    for title in (
        "3. Table Setup",
        "Step 1: Unfolding the Table",
        "１．設置方法",
        "TrailMaster X4 Tent",
        "Q1 返品",
        "炊飯器 KAMADO-5 取扱説明書",
    ):
        assert not _states_value(title), title
    # What a model writes that only echoes a title is still dropped as an echo.
    assert _looks_like_heading("TrailMaster X4 Tent")
    # A model name counts as one character of a Japanese title, not six.
    assert _looks_like_heading("炊飯器 KAMADO-5 取扱説明書")
    assert not _looks_like_heading("KAMADO-5は5.5合炊きの圧力IH炊飯器で、内釜と内ぶたがあります")


def test_a_japanese_manuals_title_is_not_quoted_as_a_statement(embedder):
    """A manual's title line opens its first passage. Eighteen characters long with a model
    name, and the model's number read as a value, it was quoted as the first sentence of the
    answer (「炊飯器 KAMADO-5 取扱説明書 [1]KAMADO-5は…」)."""
    passage = (
        "炊飯器 KAMADO-5 取扱説明書\n\n各部の名称\n\n"
        "KAMADO-5は5.5合炊きの圧力IH炊飯器です。本体、内釜、内ぶた、計量カップ、しゃもじで構成されています。"
    )
    quote = select("KAMADO-5の付属品は何ですか？", [_hit(1, passage)], embedder).quote(True)
    assert "KAMADO-5は5.5合炊き" in quote and "取扱説明書" not in quote, quote


def test_a_short_japanese_sentence_the_model_writes_with_a_model_name_is_kept(embedder):
    """A model name counts as one character of a document's title line only: a sentence the
    model wrote without its full stop is measured as written, not dropped as a title echo."""
    hits = [_hit(1, "SORA-AIRのフィルターを水で洗う場合は、よく乾かしてからセットしてください。")]
    check = SupportCheck(hits, select("フィルターは洗えますか？", hits, embedder), embedder)
    check.add("SORA-AIRのフィルターを水で洗う")
    assert check.result.kept == 1 and "SORA-AIRのフィルターを水で洗う" in check.text(True), check.text(True)


def _shown_sentences_supported(answer, embedder) -> None:
    marks: list[int] = []
    for sentence in reversed(sentences(answer.text)):
        found = [int(n) for n in CITATION.findall(sentence)]
        marks = found or marks  # a list's items share the mark after its last item
        plain = LIST_MARKER.sub("", CITATION.sub("", sentence)).strip()
        if len(plain) < 4:
            continue
        assert marks, f"uncited sentence {sentence!r} in {answer.text!r}"
        assert any(supported(plain, answer.passages[n - 1].text, embedder) for n in marks), sentence


@pytest.mark.slow
@pytest.mark.parametrize("style", ["quote", "concise", "detailed"])
def test_menu_path_comes_out_exactly(phone_kb, chat_model, embedder, style):
    *_, answer = answer_question(
        phone_kb,
        chat_model,
        "How do I turn on dark mode?",
        config=AnswerConfig(style=style, max_new_tokens=96),
    )
    assert "Settings > Display > Theme" in answer.text, answer.text
    _shown_sentences_supported(answer, embedder)


@pytest.mark.slow
@pytest.mark.parametrize("style", ["quote", "concise", "detailed"])
def test_yes_no_question_on_you_can_never_gets_no(phone_kb, chat_model, embedder, style):
    *_, answer = answer_question(
        phone_kb,
        chat_model,
        "Is it possible to add or remove contacts from groups?",
        config=AnswerConfig(style=style, max_new_tokens=96),
    )
    assert not re.search(r"\bno\b|not possible|cannot|can't", answer.text, re.I), answer.text
    assert "add or remove contacts" in answer.text
    _shown_sentences_supported(answer, embedder)


@pytest.mark.slow
def test_invented_steps_from_the_model_never_reach_the_user(phone_kb, chat_model, embedder):
    *_, answer = answer_question(
        phone_kb,
        chat_model,
        "How do I add a book to the library?",
        config=AnswerConfig(style="detailed", max_new_tokens=128),
    )
    _shown_sentences_supported(answer, embedder)
    assert "Open the Reader app" in answer.text, answer.text


@pytest.mark.slow
def test_wrong_answer_gets_low_confidence(phone_kb, chat_model):
    config = AnswerConfig(style="quote")
    *_, right = answer_question(phone_kb, chat_model, "How long does a full charge take?", config=config)
    # The guide says nothing about water resistance; the closest sentences it has are wrong.
    *_, wrong = answer_question(
        phone_kb, chat_model, "Can the Nimbus phone be used underwater while swimming?", config=config
    )
    assert "95 minutes" in right.text
    assert wrong.covered, "the test needs an answer the documents do not support, not a refusal"
    assert wrong.confidence < conf.DEFAULT_THRESHOLD, (wrong.confidence, wrong.signals)
    assert wrong.confidence < right.confidence, (wrong.confidence, right.confidence)
    assert wrong.needs_review


def test_an_answer_without_the_number_asked_for_gets_low_confidence(phone_kb):
    """Its words match the question well; it still does not say how many."""
    config = AnswerConfig(style="quote")
    question = "How many contacts can I add to a group?"
    *_, answer = answer_question(phone_kb, None, question, config=config)
    assert answer.covered and "group" in answer.text, answer.text
    assert answer.confidence <= conf.NO_NUMBER, (answer.confidence, answer.signals)
    assert answer.signals["number_given"] == 0
    assert answer.needs_review and "asks for a number" in answer.notice


def test_confidence_weights_belong_to_a_model(tmp_path):
    import json

    from assistant.generation.config import EMBEDDED_MODEL, ModelConfig

    class Model:
        def __init__(self, **kw):
            self.config = ModelConfig(**kw)

    shipped = conf.weights_for(Model(), "concise")
    assert shipped.source == "shipped"
    other = tmp_path / "other-model"
    other.mkdir()
    borrowed = conf.weights_for(Model(name=str(other)), "concise")
    assert borrowed.source.startswith("quote weights") and EMBEDDED_MODEL not in borrowed.source
    entry = {"features": list(conf.FEATURES), "weights": [0.0] * len(conf.FEATURES), "bias": 2.0}
    (other / "tsumugi-confidence.json").write_text(json.dumps({"styles": {"concise": entry}}))
    own = conf.weights_for(Model(name=str(other)), "concise")
    assert own.source == "model folder other-model" and own.bias == 2.0
    signals = conf.Signals(*[0.5] * len(conf.FEATURES))
    assert conf.score(signals, own) == pytest.approx(1 / (1 + pow(2.718281828459045, -2.0)), rel=1e-6)


def test_a_question_in_the_documents_is_answered_by_the_sentence_after_it(embedder):
    faq = (
        "## FAQ\n2) How many people can comfortably sleep in the Nimbus tent?\n"
        "   The Nimbus tent sleeps up to 4 people with room for their gear.\n"
        "3) Is the tent waterproof?\n   Yes, the fly has taped seams."
    )
    evidence = select("How many people can sleep in the Nimbus tent?", [_hit(1, faq)], embedder, max_units=1)
    assert evidence.quote(False) == "The Nimbus tent sleeps up to 4 people with room for their gear [1]."


def test_evidence_quote_cites_each_unit():
    hits = [_hit(1, "Alpha beta gamma delta."), _hit(2, "Unopened items can be returned within 30 days.")]
    evidence = select("Can unopened items be returned?", hits, None)
    assert evidence.units and evidence.units[0].n == 2
    assert Evidence(evidence.units).quote(False) == "Unopened items can be returned within 30 days [2]."


def test_a_mark_after_the_full_stop_belongs_to_the_sentence_before_it():
    from assistant.answering.citations import marks_before_end

    text = marks_before_end("It lasts two years. [1] It is red. [2][3]")
    assert sentences(text) == ["It lasts two years [1].", "It is red [2][3]."]


@pytest.mark.parametrize(
    ("question", "passage", "wanted", "unwanted"),
    [
        (
            "注文金額が3,000円の場合、送料はいくらかかりますか？",
            "## 配送料\nご注文金額が5,000円（税込）以上の場合、送料は無料です。5,000円未満の場合は全国一律550円の"
            "送料がかかります。沖縄県および離島へのお届けは、別途1,100円の追加料金が必要です。",
            "550円",
            "1,100円",
        ),
        (
            "Is shipping free on an order of 20 dollars?",
            "Shipping is free on orders over 50 dollars. Orders under 50 dollars pay a flat shipping fee of "
            "5 dollars. Parcels leave the warehouse within two days.",
            "5 dollars",
            "two days",
        ),
    ],
)
def test_a_condition_comes_with_its_other_side(embedder, question, passage, wanted, unwanted):
    """Quoted alone, "free from 5,000 yen" answered a 3,000-yen order as if it shipped free."""
    from knowledge.lexical import is_japanese

    quote = select(question, [_hit(1, passage)], embedder).quote(is_japanese(question))
    assert wanted in quote and unwanted not in quote, quote


def test_a_sentence_beside_the_answer_that_bounds_another_number_stays_out(embedder):
    passage = "The TrailMaster X4 Tent comes with a 2-year warranty. The tent weighs a little over 12 lbs."
    quote = select(
        "How long is the warranty on the TrailMaster X4 Tent?", [_hit(1, passage)], embedder
    ).quote(False)
    assert "2-year warranty" in quote and "12 lbs" not in quote, quote


def test_what_to_do_after_a_japanese_statement_comes_with_it(embedder):
    """The answer to an error was its cause alone: the instruction after it shares no word
    with the question. An instruction chosen on its own brings no other, a statement followed
    by another statement brings nothing, and the instruction before a statement is not its."""
    passage = (
        "エラー表示「E01」が出た場合は、内釜が正しくセットされていません。一度取り出してからセットし直してください。"
        "\n内釜はフッ素加工のため、金属たわしは使わないでください。蒸気口は月に一度洗ってください。"
        "\n電源プラグを差し込んでください。予約は最大13時間後まで設定できます。炊き上がりまでの時間は約45分です。"
    )
    quote = select("E01と表示されました。どうすればいいですか？", [_hit(1, passage)], embedder).quote(True)
    assert "E01" in quote and "セットし直してください" in quote, quote
    quote = select("金属たわしは使えますか？", [_hit(1, passage)], embedder).quote(True)
    assert "たわし" in quote and "蒸気口" not in quote, quote
    quote = select("予約は何時間後まで設定できますか？", [_hit(1, passage)], embedder).quote(True)
    assert "13時間" in quote and "45分" not in quote and "電源" not in quote, quote


@pytest.mark.parametrize(
    ("question", "passage", "wanted", "unwanted"),
    [
        (
            "白米が炊けるまで何分かかりますか？",
            "お米は付属の計量カップで1杯ずつ量ります。メニューから「白米」を選び、炊飯ボタンを押してください。"
            "炊き上がりまでの時間は約45分です。",
            "45分",
            "1杯",
        ),
        (
            "How long does charging the Nimbus take?",
            "On one hand, it is light. Plug the Nimbus into its charger for charging. A full charge takes 95 minutes.",
            "95 minutes",
            "one hand",
        ),
    ],
)
def test_the_number_a_question_asks_for_comes_from_beside_the_chosen_sentence(
    embedder, question, passage, wanted, unwanted
):
    """「メニューから「白米」を選び、炊飯ボタンを押してください。」 was the whole answer to how many
    minutes rice takes: it holds the question's words, the next sentence the number. A neighbour
    with a number of another kind (1杯) or a spelled one ("On one hand") stays out."""
    from knowledge.lexical import is_japanese

    # As in the shop's documents, 白米 is rarer there than 炊 (the rice cooker's manual says 炊 often).
    quote = select(question, [_hit(1, passage)], embedder, {"白米": 3.0}).quote(is_japanese(question))
    assert wanted in quote and unwanted not in quote, quote


def test_a_written_sentence_may_not_drop_the_condition_on_a_number():
    """ "ご注文金額が5,000円です" passed every other test at high confidence: the passage says
    orders of 5,000 yen or more ship free."""
    passage = "ご注文金額が5,000円（税込）以上の場合、送料は無料です。5,000円未満の場合は全国一律550円の送料がかかります。"
    assert not supported("ご注文金額が5,000円です[1]。", passage)
    assert supported("ご注文金額が5,000円以上の場合、送料は無料です[1]。", passage)
    english = "Shipping is free on orders over 50 dollars. Parcels leave within 2 days."
    assert not supported("Shipping costs 50 dollars [1].", english)
    assert supported("Shipping is free on orders over 50 dollars [1].", english)
    assert supported("Parcels leave within 2 days [1].", english), "no condition there"
    # Words that bound nothing, and digits inside a name, are no condition.
    assert supported(
        "The TrailMaster X4 Tent keeps you dry in rain [1].",
        "If it rains, the TrailMaster X4 Tent keeps you dry.",
    )
    assert supported(
        "The charge limit is 80 percent [1].", "Under Settings > Battery, the charge limit is 80 percent."
    )
    assert supported(
        "電源ボタンを3秒間押し続けてください[1]。", "以下の手順で、電源ボタンを3秒間押し続けてください。"
    )


def test_a_stop_while_the_model_writes_leaves_the_answer_unfinished(phone_kb, chat_model):
    """Stopped mid-sentence, the answer was finished anyway: scored, recorded, and shown with a
    confidence as if complete (or replaced by quotes "as the model's sentences did not hold up")."""
    import threading

    stop = threading.Event()
    config = AnswerConfig(style="detailed", max_new_tokens=200)
    for answer in answer_question(
        phone_kb, chat_model, "How do I add a book to the library?", config=config, stop=stop
    ):
        if answer.text.strip():
            stop.set()
    assert stop.is_set(), "the model wrote nothing to stop"
    assert not answer.done
    assert not answer.notice and not answer.signals
