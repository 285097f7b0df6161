"""Confidence: token probabilities and retrieval scores in one number that ranks answers to
answerable questions above answers to unanswerable ones."""

from __future__ import annotations

import csv
from collections import deque

import pytest

from assistant import confidence as conf
from assistant.answer import AnswerConfig, answer_question
from tests.conftest import DATA


def test_roc_auc():
    assert conf.roc_auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert conf.roc_auc([0.1], [0.9]) == 0.0
    assert conf.roc_auc([0.5], [0.5]) == 0.5
    assert conf.roc_auc([], [0.1]) is None


def test_score_follows_the_fitted_signs():
    base = conf.Signals(token_logprob=-1.0, similarity=0.4, coverage=0.4, cited=0.5, abstained=0.0)
    better = [
        conf.Signals(-1.0, 0.7, 0.4, 0.5, 0.0),  # a closer passage
        conf.Signals(-1.0, 0.4, 0.9, 0.5, 0.0),  # the question's terms all in one passage
        conf.Signals(-1.0, 0.4, 0.4, 1.0, 0.0),  # every sentence cited
    ]
    for s in better:
        assert conf.score(s) > conf.score(base), s
    assert conf.score(conf.Signals(-1.0, 0.4, 0.4, 0.5, 1.0)) < conf.score(base), "an abstention is not sure"
    # The embedded model invents fluently: a more probable answer on the same retrieval is trusted less.
    assert conf.score(conf.Signals(-0.2, 0.4, 0.4, 0.5, 0.0)) < conf.score(base)
    assert 0.0 < conf.score(base) < 1.0
    assert conf.label(0.1) == "low" and conf.label(0.6) == "medium" and conf.label(0.9) == "high"
    assert conf.cited_share("It sleeps four [1]. It is waterproof.") == 0.5


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
                assert set(answer.signals) == set(conf.FEATURES)
                assert answer.signals["token_logprob"] < 0
            out.append(answer.confidence)
        return out

    good, bad = scores(answerable), scores(unanswerable)
    auc = conf.roc_auc(good, bad)
    assert auc >= 0.75, (good, bad)
    assert sum(good) / len(good) > sum(bad) / len(bad)
