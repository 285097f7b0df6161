"""Tuning and evaluation uploads within limits: refused by size before they are read, zip
bombs refused, tables parsed in the extraction process, and previews of bounded size."""

from __future__ import annotations

import json
import time
import tracemalloc
import zipfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from assistant.config import Settings
from assistant.evaluation.sets import load_eval_set
from assistant.records import PREVIEW_CHARS, _table_from_record
from assistant.tuning.data import load_pairs
from assistant.ui import evaluate_tab, tune_tab
from knowledge.errors import ConfigError, ParseError
from knowledge.limits import IngestLimits, extractor_status
from tests.conftest import DATA

KUMO = DATA / "tune" / "kumo-lantern-qa.csv"
AUTO = tune_tab.AUTO


def _app(tmp_path: Path, **limits) -> SimpleNamespace:
    """What the tabs' handlers read of the app: its settings."""
    return SimpleNamespace(settings=Settings(data_dir=tmp_path / "data", limits=IngestLimits(**limits)))


def _sparse(path: Path, megabytes: int) -> Path:
    with path.open("wb") as f:
        f.truncate(megabytes * 1024 * 1024)  # takes no disk and no time to make
    return path


def test_a_200_mb_tuning_file_is_refused_before_it_is_read(tmp_path):
    big = _sparse(tmp_path / "pairs.csv", 200)
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ParseError, match=r"200 MB, over the 50 MB limit .*TSUMUGI_MAX_DATA_MB"):
            load_pairs(big)
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * 1024 * 1024, f"{peak / 2**20:.0f} MB were allocated: the file was read"
    assert elapsed < 2
    # The tabs refuse it the same way, with the server's limit.
    app = _app(tmp_path)
    with pytest.raises(gr.Error, match="TSUMUGI_MAX_DATA_MB"):
        tune_tab.check_data(app, tune_tab.FILE_SOURCE, str(big), None, AUTO, AUTO)
    with pytest.raises(gr.Error, match="TSUMUGI_MAX_DATA_MB"):
        tune_tab.new_file(app, str(big), None)
    with pytest.raises(gr.Error, match="TSUMUGI_MAX_DATA_MB"):
        evaluate_tab.load_file(app, str(big))


def test_the_data_limit_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TSUMUGI_MAX_DATA_MB", "1")
    monkeypatch.setenv("TSUMUGI_PARSE_MEMORY_MB", "3000")
    limits = Settings.from_env().limits
    assert (limits.max_data_mb, limits.max_parse_memory_mb) == (1, 3000)
    two = _sparse(tmp_path / "questions.csv", 2)
    with pytest.raises(ParseError, match="over the 1 MB limit"):
        load_eval_set(two, limits=limits)
    for name, value in (("TSUMUGI_MAX_DATA_MB", "0"), ("TSUMUGI_PARSE_MEMORY_MB", "-1")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match="max_data_mb|max_parse_memory_mb"):
            Settings.from_env()
        monkeypatch.delenv(name)


def _xlsx_bomb(path: Path, megabytes: int = 50) -> Path:
    """A workbook whose one sheet expands about a thousand times."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
        z.writestr("xl/worksheets/sheet1.xml", b" " * (megabytes * 1024 * 1024))
    return path


def test_an_xlsx_zip_bomb_is_refused(tmp_path):
    bomb = _xlsx_bomb(tmp_path / "pairs.xlsx")
    assert bomb.stat().st_size < 200_000
    with pytest.raises(ParseError, match="zip bomb"):
        load_pairs(bomb)
    with pytest.raises(ParseError, match="zip bomb"):
        load_eval_set(bomb)
    with pytest.raises(gr.Error, match="zip bomb"):
        evaluate_tab.load_file(_app(tmp_path), str(bomb))


def test_a_table_is_read_in_the_extraction_process_under_its_limits():
    # A time limit no reading can meet stands in for a file built to stall the reader.
    with pytest.raises(ParseError, match="was stopped"):
        load_pairs(KUMO, limits=IngestLimits(parse_timeout_s=0.001))
    baseline = extractor_status(IngestLimits())["used_mb"]
    with pytest.raises(ParseError, match=r"needs more memory than the \d+ MB allowed"):
        # 40 MB of one cell: within the size limit, beyond a memory limit near the baseline.
        load_pairs(
            "big.csv",
            data=b"question,answer\nq," + b"a" * 40_000_000,
            limits=IngestLimits(max_parse_memory_mb=baseline + 64),
        )
    assert load_pairs(KUMO).report.usable == 40, "the next file is read"


def test_a_jsonl_with_a_huge_line_gives_a_bounded_preview(tmp_path):
    huge = "The lantern runs for a long time. " * 150_000  # one 5 MB answer
    path = tmp_path / "pairs.jsonl"
    lines = [{"question": f"Question {i}?", "answer": huge if i == 0 else f"Answer {i}."} for i in range(25)]
    path.write_text("\n".join(json.dumps(line) for line in lines), encoding="utf-8")
    outputs = tune_tab.check_data(_app(tmp_path), tune_tab.FILE_SOURCE, str(path), None, AUTO, AUTO)
    rows = outputs[1]["value"]
    assert rows[0][1].startswith("The lantern runs") and all(len(c) <= PREVIEW_CHARS for r in rows for c in r)
    assert len(json.dumps(outputs, default=str)) < 20_000, "what goes to the browser is small"
    assert load_pairs(path).examples[0].answer == huge.strip(), "training gets the whole answer"


def test_a_header_of_huge_names_is_refused_and_cells_are_plain_values(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("question," + "x" * 10_000 + "\nq,a\n", encoding="utf-8")
    with pytest.raises(ParseError, match="column name over 200 characters"):
        load_pairs(path)
    good = {"name": "t", "columns": ["q"], "rows": [{"q": "a"}], "messages": []}
    assert _table_from_record(good, "t.csv").rows == [{"q": "a"}]
    for bad in ({**good, "rows": [{"q": ["a"]}]}, {**good, "extra": 1}, {**good, "columns": [1]}):
        with pytest.raises(ParseError, match="could not be read as a table"):
            _table_from_record(bad, "t.csv")


def test_the_evaluate_preview_holds_at_most_n_rows(tmp_path, monkeypatch):
    n = evaluate_tab.PREVIEW_ROWS
    long_answer = "Two years from the date of purchase, for the original owner. " * 100
    path = tmp_path / "faq.csv"
    lines = ["question,answer", f'"Question 0?","{long_answer}"']
    lines += [f"Question {i}?,Answer {i}." for i in range(1, 2 * n + 50)]
    path.write_text("\n".join(lines), encoding="utf-8")
    told: list[str] = []
    monkeypatch.setattr(gr, "Info", told.append)
    rows, name, shown = evaluate_tab.load_file(_app(tmp_path), str(path))
    assert name == "faq" and len(rows) == n
    assert all(len(c) <= PREVIEW_CHARS for r in rows for c in r)
    assert told == [f"{2 * n + 50} questions: the table shows the first {n}, and the other {n + 50} are saved with them as they are."]  # fmt: skip
    # Saving the table saves every question, the long answer whole.
    saved = evaluate_tab.rows_to_set("faq", rows, shown)
    assert saved.items == shown.items and saved.items[0].expected == long_answer.strip()
    # An edited row is taken as edited, and the rest still follow.
    edited = [["A new question?", "A new answer.", "", ""], *rows[1:]]
    saved = evaluate_tab.rows_to_set("faq", edited, shown)
    assert saved.items[0].question == "A new question?" and saved.items[1:] == shown.items[1:]
    # A table written anew, sharing no row with the file, is saved as it is.
    assert len(evaluate_tab.rows_to_set("mine", [["Q?", "A.", "", ""]], shown).items) == 1
