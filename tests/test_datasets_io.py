"""Datasets in and out: Parquet, save_to_disk folders and cached hub datasets read like a CSV;
evaluation sets and runs written as Parquet or dataset folders; pushing says why it cannot."""

from __future__ import annotations

import csv
import glob
import os
import shutil
import socket
import subprocess
import sys

import pytest

from assistant.datasets_io import read_dataset, write_rows
from assistant.evaluation.sets import load_eval_set
from assistant.tuning.data import load_pairs
from assistant.tuning.job import data_source, load_training_data
from knowledge.errors import ParseError
from tests.conftest import DATA, ROOT

KUMO = DATA / "tune" / "kumo-lantern-qa.csv"


def _kumo_rows() -> list[dict]:
    with KUMO.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _dataset(rows):
    import datasets

    return datasets.Dataset.from_list(rows)


def _pairs(data) -> list[tuple[str, str]]:
    return [(e.question, e.answer) for e in data.examples]


def _load(kind, path, tmp_path, **source):
    request = {"data": data_source(kind, path=path, **source)}
    return load_training_data(request, None, tmp_path)


def test_parquet_and_dataset_folders_give_the_pairs_the_csv_gives(tmp_path):
    expected = _pairs(load_pairs(KUMO))
    assert len(expected) == 40
    # Other column names than the CSV's, which the mapping recognises (prompt/completion).
    rows = [{"prompt": r["Question"], "completion": r["Answer"], "id": i} for i, r in enumerate(_kumo_rows())]
    _dataset(rows).to_parquet(str(tmp_path / "kumo.parquet"))
    _dataset(rows).save_to_disk(str(tmp_path / "kumo-folder"))
    import datasets

    splits = datasets.DatasetDict({"train": _dataset(rows), "test": _dataset(rows[:3])})
    splits.save_to_disk(str(tmp_path / "kumo-splits"))

    from_parquet = _load("file", tmp_path / "kumo.parquet", tmp_path)
    assert _pairs(from_parquet) == expected
    assert (from_parquet.report.question_column, from_parquet.report.answer_column) == (
        "prompt",
        "completion",
    )
    assert _pairs(_load("dataset", tmp_path / "kumo-folder", tmp_path)) == expected
    assert _pairs(_load("dataset", tmp_path / "kumo-splits", tmp_path)) == expected, "train by default"
    test_split = _load("dataset", tmp_path / "kumo-splits", tmp_path, split="test")
    assert _pairs(test_split) == expected[:3]


def test_a_dataset_folder_with_wrong_columns_gets_the_csvs_sentence(tmp_path):
    rows = [{"Frage": f"q{i}", "Antwort": f"a{i}", "Notiz": ""} for i in range(8)]
    (tmp_path / "pairs.csv").write_text("Frage,Antwort,Notiz\n" + "".join(f"q{i},a{i},\n" for i in range(8)))
    _dataset(rows).save_to_disk(str(tmp_path / "pairs"))
    messages = []
    for kind, path in (("file", tmp_path / "pairs.csv"), ("dataset", tmp_path / "pairs")):
        with pytest.raises(ParseError) as caught:
            _load(kind, path, tmp_path)
        messages.append(str(caught.value))
    csv_message, folder_message = messages
    assert "choose the question and answer columns" in csv_message
    assert folder_message == csv_message.replace("pairs.csv", "pairs"), messages


def test_splits_must_be_chosen_when_there_is_no_train_split(tmp_path):
    import datasets

    rows = [{"question": "q", "answer": "a"}]
    datasets.DatasetDict({"dev": _dataset(rows), "eval": _dataset(rows)}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ParseError, match=r"has the splits dev, eval; choose one \(--split\)"):
        read_dataset(tmp_path / "d")
    with pytest.raises(ParseError, match="has no split 'train'; its splits are dev, eval"):
        read_dataset(tmp_path / "d", split="train")
    assert read_dataset(tmp_path / "d", split="eval").rows == [{"question": "q", "answer": "a"}]
    with pytest.raises(ParseError, match="not a saved dataset"):
        read_dataset(tmp_path)


def _cache_as_hub_dataset(parquet, repo: str, cache) -> None:
    """Lay ``parquet`` out in ``cache`` as ``datasets`` lays out a hub dataset it has downloaded."""
    import datasets

    datasets.load_dataset("parquet", data_files={"train": str(parquet)}, cache_dir=str(cache / "build"))
    built = next(p for p in glob.glob(str(cache / "build" / "parquet" / "*" / "*" / "*")) if os.path.isdir(p))
    owner, name = repo.split("/")
    target = cache / f"{owner}___{name}" / "default" / "0.0.0" / os.path.basename(built)
    shutil.copytree(built, target)
    for arrow in target.glob("parquet-*.arrow"):
        arrow.rename(target / arrow.name.replace("parquet-", f"{name}-"))


def test_a_cached_hub_dataset_loads_offline_and_an_uncached_one_says_how_to_fetch(tmp_path, monkeypatch):
    import datasets

    assert datasets.config.HF_HUB_OFFLINE, "the tests run offline"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    rows = [{"question": r["Question"], "answer": r["Answer"]} for r in _kumo_rows()]
    _dataset(rows).to_parquet(str(tmp_path / "kumo.parquet"))
    _cache_as_hub_dataset(tmp_path / "kumo.parquet", "acme/kumo-faq", tmp_path / "cache")

    data = _load("dataset", "acme/kumo-faq", tmp_path)
    assert _pairs(data) == _pairs(load_pairs(KUMO))
    with pytest.raises(
        ParseError, match="not in the local Hugging Face cache; set TSUMUGI_ALLOW_DOWNLOADS=1"
    ):
        _load("dataset", "acme/not-cached", tmp_path)


def test_evaluation_sets_from_parquet_and_back(tmp_path):
    rows = [
        {"question": "Who makes the Kumo Lantern KL-7?", "answer": "Hoshikawa Works", "unanswerable": False},
        {"question": "What does the KL-9 cost?", "answer": "", "unanswerable": True},
        {"question": "", "answer": "no question", "unanswerable": False},
    ]
    _dataset(rows).to_parquet(str(tmp_path / "set.parquet"))
    evalset = load_eval_set(tmp_path / "set.parquet")
    assert evalset.name == "set" and evalset.skipped == [3]
    assert [(i.question, i.expected, i.unanswerable) for i in evalset.items] == [
        ("Who makes the Kumo Lantern KL-7?", "Hoshikawa Works", False),
        ("What does the KL-9 cost?", "", True),
    ]
    # Written out as a dataset folder and as Parquet, it reads back as the same set.
    for out in (tmp_path / "exported", tmp_path / "exported.parquet"):
        write_rows(evalset.rows(), out)
        assert load_eval_set(out, name="again").items == evalset.items


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "Tsumugi is offline (set TSUMUGI_ALLOW_DOWNLOADS=1"),
        ({"TSUMUGI_ALLOW_DOWNLOADS": "1"}, "no token (set HF_TOKEN"),
        (
            {"TSUMUGI_ALLOW_DOWNLOADS": "1", "HF_TOKEN": "hf_test"},
            "Could not push to 'acme/runs' on http://127.0.0.1",
        ),
    ],
)
def test_push_to_hub_says_in_one_sentence_why_it_cannot(tmp_path, env, message):
    from assistant.evaluation.sets import EvalItem, EvalSet, EvalSetStore
    from knowledge.library import Library

    data_dir = tmp_path / "data"
    kb = Library(data_dir).create("faq")
    EvalSetStore(kb.folder).save(EvalSet("smoke", [EvalItem("q?", "a")]))
    base = {
        k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    }
    proc = subprocess.run(
        [sys.executable, "-m", "assistant", "export-data", "eval-set", "--kb", "faq", "--name", "smoke",
         "--out", str(tmp_path / "smoke.parquet"), "--push-to-hub", "acme/runs"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**base, "TSUMUGI_DATA": str(data_dir), "HF_HOME": str(tmp_path / "hf"),
             "HF_ENDPOINT": f"http://127.0.0.1:{_free_port()}", "PYTHONPATH": str(ROOT), **env},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Wrote 1 rows of evaluation set 'smoke'" in proc.stdout, "the file is written first"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_a_column_of_mixed_kinds_is_written_as_text_and_nothing_is_lost(tmp_path):
    import datasets

    rows = [{"question": "a", "f1": 0.5, "cited": [1, 2]}, {"question": "b", "f1": "n/a", "cited": []}]
    back = datasets.Dataset.from_parquet(
        str(write_rows(rows, tmp_path / "mixed.parquet")), cache_dir=str(tmp_path)
    )
    assert list(back["f1"]) == ["0.5", "n/a"] and list(back["cited"]) == ["[1, 2]", "[]"]
    with pytest.raises(Exception, match="nothing to export"):
        write_rows([], tmp_path / "empty.parquet")
    assert not (tmp_path / "empty.parquet").exists()


def test_rows_of_different_columns_keep_every_column_and_other_folders_are_never_emptied(tmp_path):
    import datasets

    closed_book = {"question": "a", "f1": 0.5}
    with_retrieval = {"question": "b", "f1": 1.0, "confidence": 0.8, "escalated": False}
    back = datasets.Dataset.from_parquet(
        str(write_rows([closed_book, with_retrieval], tmp_path / "runs.parquet")), cache_dir=str(tmp_path)
    )
    assert back.column_names == ["question", "f1", "confidence", "escalated"]
    assert list(back["confidence"]) == [None, 0.8]
    precious = tmp_path / "documents"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(Exception, match="holds other files; export into a new folder"):
        write_rows([closed_book], precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    write_rows([closed_book], tmp_path / "export")
    write_rows([with_retrieval], tmp_path / "export")  # an earlier export is replaced whole
    assert datasets.load_from_disk(str(tmp_path / "export"))["question"] == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
