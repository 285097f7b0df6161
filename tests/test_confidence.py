"""Confidence: evidence and support-check signals in one number that ranks answers to
answerable questions above answers to unanswerable ones (correct-versus-wrong answers are
tested in tests/test_evidence.py and measured in bench/answers.py)."""

from __future__ import annotations

import csv
from collections import deque

import pytest

from assistant.answering import confidence as conf
from assistant.answering.answer import AnswerConfig, answer_question
from assistant.evaluation.metrics import roc_auc
from tests.conftest import DATA


def test_roc_auc():
    assert roc_auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert roc_auc([0.1], [0.9]) == 0.0
    assert roc_auc([0.5], [0.5]) == 0.5
    assert roc_auc([], [0.1]) is None


def test_label_names_the_bands_around_the_threshold():
    assert conf.label(0.1) == "low" and conf.label(0.6) == "medium" and conf.label(0.9) == "high"
    assert conf.label(None) == "unknown"


def _sample(n: int) -> tuple[list[str], list[str]]:
    with open(DATA / "eval" / "contoso-faq.csv", encoding="utf-8") as fh:
        answerable = [r["question"] for r in csv.DictReader(fh)][::15][:n]
    with open(DATA / "eval" / "contoso-unanswerable.csv", encoding="utf-8") as fh:
        unanswerable = [r["question"] for r in csv.DictReader(fh)][::5][:n]
    return answerable, unanswerable


@pytest.mark.slow
def test_answerable_questions_score_higher(contoso_kb, chat_model):
    answerable, unanswerable = _sample(6)
    config = AnswerConfig(max_new_tokens=64)

    def scores(questions):
        out = []
        for q in questions:
            answer = deque(answer_question(contoso_kb, chat_model, q, config=config), maxlen=1)[0]
            assert answer.confidence is not None and 0 <= answer.confidence <= 1
            if answer.covered:
                assert set(answer.signals) == {*conf.FEATURES, "number_given"}
            out.append(answer.confidence)
        return out

    good, bad = scores(answerable), scores(unanswerable)
    auc = roc_auc(good, bad)
    assert auc >= 0.75, (good, bad)
    assert sum(good) / len(good) > sum(bad) / len(bad)
