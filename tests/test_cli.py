"""The command line, run as a user would, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import CONTOSO, FIXTURES, ROOT


def run(args, env, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "assistant", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def env(tmp_path_factory, model_cache):
    return dict(
        os.environ,
        TSUMUGI_DATA=str(tmp_path_factory.mktemp("cli-data")),
        TSUMUGI_MODEL_CACHE=str(model_cache),
        PYTHONPATH=str(ROOT),
    )


def test_ingest_then_search_json(env, shared_data):
    proc = run(["ingest", "--kb", "manuals", str(CONTOSO), str(FIXTURES / "unstructured-password.pdf")], env)
    assert "added     product_info_1.md" in proc.stdout
    assert (
        "failed    unstructured-password.pdf: unstructured-password.pdf is password-protected" in proc.stdout
    )
    assert "20 added, 1 failed" in proc.stderr
    assert "files" in proc.stderr  # progress went to stderr

    proc = run(
        ["search", "--kb", "manuals", "--top-k", "3", "--json", "Is the TrailMaster X4 Tent waterproof?"], env
    )
    hits = json.loads(proc.stdout)
    assert 1 <= len(hits) <= 3
    assert set(hits[0]) >= {"text", "doc", "page", "score"}
    assert hits[0]["doc"] == "product_info_1.md" and hits[0]["page"] is None

    assert all(h["relevant"] for h in hits)

    # The ranking is always shown; the cut-off marks (or with --cutoff drops) what is off-topic.
    unrelated = json.loads(
        run(["search", "--kb", "manuals", "--json", "What is the capital of France?"], env).stdout
    )
    assert unrelated and not any(h["relevant"] for h in unrelated)
    proc = run(["search", "--kb", "manuals", "--json", "--cutoff", "What is the capital of France?"], env)
    assert json.loads(proc.stdout) == []


def test_search_pdf_page_numbers(env, shared_data):
    run(
        [
            "ingest",
            "--kb",
            "pdfs",
            str(FIXTURES / "pypdf-pdflatex-4-pages.pdf"),
            str(FIXTURES / "pdfminer-jo.pdf"),
        ],
        env,
    )
    hits = json.loads(run(["search", "--kb", "pdfs", "--json", "わたくしといふ現象は"], env).stdout)
    assert hits[0]["doc"] == "pdfminer-jo.pdf" and hits[0]["page"] == 1


def test_errors_are_one_line_and_nonzero(env):
    proc = run(["search", "--kb", "nope", "hello"], env, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: There is no knowledge base called 'nope'")
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_ask_json(env, shared_data):
    run(["ingest", "--kb", "one", str(CONTOSO / "product_info_1.md")], env)
    data = json.loads(
        run(
            [
                "ask",
                "--kb",
                "one",
                "--json",
                "--max-new-tokens",
                "64",
                "How many people fit in the TrailMaster X4 Tent?",
            ],
            env,
        ).stdout
    )
    assert data["covered"] and data["passages"]
    assert data["citations"] and data["citations"][0]["doc"] == "product_info_1.md"
    data = json.loads(run(["ask", "--kb", "one", "--json", "Who won the 2018 World Cup?"], env).stdout)
    assert data["covered"] is False and data["citations"] == []


def test_tune_refuses_bad_data_with_one_sentence(env, tmp_path):
    bad = tmp_path / "pairs.csv"
    bad.write_text("Frage;Antwort;Notiz\nx;y;z\n")
    proc = run(["tune", "--data", str(bad), "--name", "x"], env, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: Could not tell which column")
    proc = run(["tune", "--data", str(tmp_path / "missing.csv"), "--name", "x"], env, check=False)
    assert proc.returncode == 2 and "could not be read" in proc.stderr
    assert json.loads(run(["jobs", "--json"], env).stdout) == []


@pytest.mark.slow
def test_eval_prints_the_metrics(env, shared_data):
    from tests.conftest import DATA

    run(["ingest", "--kb", "manuals", str(CONTOSO)], env)
    proc = run(
        [
            "eval",
            "--kb",
            "manuals",
            "--set",
            str(DATA / "eval" / "contoso-eval.csv"),
            "--limit",
            "3",
            "--json",
        ],
        env,
    )
    result = json.loads(proc.stdout)
    assert result["metrics"]["questions"] == 3 and result["metrics"]["retrieval_recall"] == 1.0
    assert 0 < result["metrics"]["f1"] <= 1 and result["config"]["top_k"] == 5
    assert "answering: 3/3 questions" in proc.stderr
    text = run(["eval", "--kb", "manuals", "--set", "contoso-eval", "--limit", "2"], env).stdout
    assert "Answer token F1" in text and "Word overlap between the answer" in text


def test_a_new_knowledge_base_takes_a_passage_size(env, shared_data):
    from pathlib import Path

    from knowledge.library import Library

    doc = str(CONTOSO / "product_info_1.md")
    run(["ingest", "--kb", "short", "--chunk-size", "100", doc], env)
    run(["ingest", "--kb", "standard", doc], env)
    library = Library(Path(env["TSUMUGI_DATA"]))
    short, standard = library.get("short"), library.get("standard")
    assert (short.chunking.size, short.chunking.overlap, standard.chunking.size) == (100, 20, 224)
    assert short.count_chunks() > standard.count_chunks()
