"""Training data for tuning: files of pairs, chat JSONL, validation reports, splits, encoding."""

from __future__ import annotations

import io
import json

import pytest

from assistant.records import read_records
from assistant.tuning.data import from_texts, load_pairs
from knowledge.errors import ParseError
from tests.conftest import DATA

KUMO = DATA / "tune" / "kumo-lantern-qa.csv"


def test_recognises_question_and_answer_columns():
    data = load_pairs(KUMO)
    assert data.report.question_column == "Question" and data.report.answer_column == "Answer"
    assert data.report.usable == 40 and not data.report.warnings()
    assert data.examples[0].question == "Who makes the Kumo Lantern KL-7?"
    assert "Hoshikawa" in data.examples[0].answer
    assert len(data.report.preview) == 5


def test_japanese_columns_tsv_and_report(tmp_path):
    rows = ["質問\t回答\t備考"]
    rows += [f"営業時間は？{i}\t平日9時から18時です。{i}\t" for i in range(8)]
    rows += ["営業時間は？0\t平日9時から18時です。0\t重複", "送料は？\t\t空欄", "\t答えだけ\t"]
    path = tmp_path / "faq.tsv"
    path.write_bytes("\n".join(rows).encode("cp932"))
    data = load_pairs(path)
    report = data.report
    assert (report.question_column, report.answer_column) == ("質問", "回答")
    assert report.rows == 11 and report.usable == 8
    assert report.duplicates == 1 and report.missing == [10, 11]
    warnings = " ".join(report.warnings())
    assert "2 rows have an empty question or answer" in warnings
    assert "1 duplicate" in warnings
    assert "Only 8 examples" in warnings


def test_ambiguous_columns_need_a_choice_and_wrong_names_are_named(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("col1,col2,col3\n" + "\n".join(f"q{i},a{i},x" for i in range(10)))
    with pytest.raises(ParseError, match="choose the question and answer columns"):
        load_pairs(path)
    data = load_pairs(path, question_column="col1", answer_column="col2")
    assert data.examples[3].question == "q3" and data.examples[3].answer == "a3"
    with pytest.raises(ParseError, match="has no column named 'Frage'.*col1, col2, col3"):
        load_pairs(path, question_column="Frage", answer_column="col2")


def test_two_unnamed_columns_are_taken_in_order_with_a_note(tmp_path):
    path = tmp_path / "two.csv"
    path.write_text("left,right\n" + "\n".join(f"q{i},a{i}" for i in range(25)))
    data = load_pairs(path)
    assert data.examples[0].question == "q0"
    assert "Took 'left' as the question column" in data.report.warnings()[0]


def test_chat_jsonl_and_xlsx(tmp_path):
    import openpyxl

    lines = [
        {"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"A{i}"}]}
        for i in range(7)
    ]
    lines.append({"messages": [{"role": "user", "content": "no answer"}]})
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines))
    data = load_pairs(path)
    assert data.report.kind == "chat" and data.report.usable == 7 and data.report.missing == [8]

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Prompt", "Response"])
    for i in range(6):
        sheet.append([f"question {i}", f"answer {i}"])
    buf = io.BytesIO()
    book.save(buf)
    data = load_pairs(tmp_path / "pairs.xlsx", data=buf.getvalue())
    assert data.report.question_column == "Prompt" and data.examples[5].answer == "answer 5"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"question,answer\n", "has no rows"),
        (b'{"question": "q"}\n{broken', "Line 2 of bad.jsonl is not valid JSON"),
        (b"PK\x03\x04 not really a workbook", "not a readable Excel workbook"),
    ],
)
def test_bad_files_give_one_clear_sentence(tmp_path, content, message):
    name = "bad.xlsx" if content.startswith(b"PK") else "bad.jsonl" if b"{" in content else "bad.csv"
    with pytest.raises(ParseError, match=message):
        read_records(tmp_path / name, data=content)


def test_split_holds_out_ten_percent_and_at_least_five():
    data = load_pairs(KUMO)
    train, val = data.split()
    assert len(val) == 5 and len(train) == 35
    assert not set(train) & set(val)
    assert data.split() == (train, val), "the split is repeatable"
    big = from_texts("t", [f"passage {i}" for i in range(200)])
    assert len(big.split()[1]) == 20
    with pytest.raises(ParseError, match="at least 6"):
        from_texts("t", ["a", "b"]).split()


@pytest.mark.slow
def test_loss_covers_the_answer_only_and_batches_pad_to_their_longest(model_cache):
    from transformers import AutoTokenizer

    from assistant.generation.config import prepare_embedded
    from assistant.tuning.train import collate, encode_example, length_batches

    tokenizer = AutoTokenizer.from_pretrained(prepare_embedded(model_cache))
    data = load_pairs(KUMO)
    example = data.examples[0]
    enc = encode_example(tokenizer, example, 512)
    trained = tokenizer.decode([t for t, label in zip(enc.input_ids, enc.labels) if label != -100])
    assert trained.startswith(example.answer), trained
    assert example.question not in trained
    assert len(trained) < len(example.answer) + 20  # the answer and the end-of-turn marker

    limit = len(enc.input_ids) - 5
    cut = encode_example(tokenizer, example, limit)
    assert cut.cut and len(cut.input_ids) == limit and cut.trained_tokens == enc.trained_tokens - 5
    prompt_only = len(enc.input_ids) - enc.trained_tokens
    assert encode_example(tokenizer, example, prompt_only) is None, "nothing left to learn"

    items = [encode_example(tokenizer, e, 512) for e in data.examples]
    batches = length_batches(items, 4, None)
    widths = [collate(b, tokenizer.pad_token_id, "cpu")["input_ids"].shape[1] for b in batches]
    assert widths == [max(len(e.input_ids) for e in b) for b in batches]
    assert max(widths) < 100, "padding stops at the longest example, far below the 512 limit"
