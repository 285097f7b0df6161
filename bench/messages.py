"""Drafts for questions as customers send them: inside an email, with a greeting, pleasantries,
what happened, a sign-off and a name.

Each development question is put in three customer messages per language (written once, the
same for every corpus of that language, below), and drafted in the quote style (the
documents' sentences, no generation: what is measured is which passages the draft reads and
whether it says the documents cover it). Paths, in one run:

- **question alone**: a draft for the bare question (the ceiling);
- **message searched whole**: the message searched as one text (drafts before: the
  pleasantries' terms, which no document holds, weighed most in the relevance test);
- **Tsumugi**: the draft as it is (``draft_reply``: the message without the sentences that
  ask nothing and share no term with the documents; each question searched with the rest of
  the message, which helps rank, while only the question makes a passage relevant).

Scores: for answerable questions, the share covered (some passage passed the relevance test),
the answer's passage first (``bench.retrieval_quality``'s hit) and the draft holding the
answer (``is_correct``); for questions the documents do not cover, the share a draft still
answers (lower is better).

``python -m bench.messages [--questions N]`` writes ``bench/results/messages.md``.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from pathlib import Path

from bench.common import cpu_flags
from bench.retrieval_quality import DATA, ingested_corpora, is_hit, report_main

MESSAGES = {
    "ja": (
        "お世話になっております。山田です。\n{q}\nよろしくお願いいたします。\n山田太郎",
        "いつも利用させていただいております。\n{q}\nお忙しいところ恐れ入りますが、ご回答をお願いいたします。\n佐々木",
        "先日そちらで商品を購入しました。\n{q}\nよろしくお願いします。\n田中",
    ),
    "en": (
        "Hi there,\n\n{q}\n\nThanks,\nMaria Lopez",
        "Hello,\nI hope you are well. {q} I would appreciate a quick reply.\nBest regards,\nJohn Smith",
        "Hi,\nI bought something from you last month.\n{q}\nThanks,\nSam",
    ),
}
PATHS = ("question alone", "message searched whole", "Tsumugi")


def _final(generator):
    return deque(generator, maxlen=1)[0]


def drafted(kb, path: str, message: str, question: str):
    """The finished quote-style draft of ``message`` along ``path``."""
    from assistant.answering.answer import AnswerConfig, answer_question
    from assistant.drafting.compose import DraftConfig, draft_reply

    config = DraftConfig(style="quote", escalate=False)
    if path == "question alone":
        return _final(draft_reply(kb, None, question, config))
    if path == "message searched whole":
        return _final(answer_question(kb, None, message, config=AnswerConfig(style="quote", escalate=False)))
    return _final(draft_reply(kb, None, message, config))


def score(kb, items: list[dict], unanswerable: list[str], template: str) -> dict:
    from assistant.evaluation.metrics import is_correct

    out = {}
    for path in PATHS:
        covered = first = correct = 0
        for item in items:
            answer = drafted(kb, path, template.format(q=item["q"]), item["q"])
            covered += answer.covered
            first += bool(answer.covered and answer.passages) and is_hit(
                answer.passages[0].doc, answer.passages[0].text, item
            )
            correct += answer.covered and is_correct(answer.text, item["a"])
        answered = sum(drafted(kb, path, template.format(q=q), q).covered for q in unanswerable)
        n = max(1, len(items))
        out[path] = {
            "covered": covered / n,
            "first": first / n,
            "correct": correct / n,
            "unanswerable answered": answered / len(unanswerable) if unanswerable else None,
        }
    return out


def run(questions: int, data: Path = DATA) -> dict:
    results = {}
    for corpus, kb, items, unanswerable in ingested_corpora(questions, data):
        lang = "ja" if corpus in ("jaquad", "ja-support") else "en"
        for n, template in enumerate(MESSAGES[lang], start=1):
            results[(corpus, n)] = (len(items), len(unanswerable), score(kb, items, unanswerable, template))
            print(corpus, n, results[(corpus, n)], flush=True)
    return results


def markdown(results: dict, questions: int) -> str:
    lines = [
        "# Drafts for questions inside customers' messages",
        "",
        f"`python -m bench.messages --questions {questions}` · {dt.date.today()} · CPU flags: {cpu_flags()}",
        "",
        "Each cell: covered / answer's passage first / draft holds the answer, over the answerable "
        "questions; then the share of questions the documents do not cover that a draft still answers "
        "(lower is better). Messages: `bench/messages.py`'s MESSAGES, numbered in order; see the "
        "module's docstring for the paths.",
        "",
        "| corpus | message (questions) | " + " | ".join(PATHS) + " |",
        "|---|---|" + "---|" * len(PATHS),
    ]
    for (corpus, n), (count, unanswerable, scores) in results.items():
        cells = []
        for path in PATHS:
            s = scores[path]
            cell = f"{s['covered']:.2f} / {s['first']:.2f} / {s['correct']:.2f}"
            if s["unanswerable answered"] is not None:
                cell += f" · {s['unanswerable answered']:.2f}"
            cells.append(cell)
        told = f"{count}" + (f" + {unanswerable} not covered" if unanswerable else "")
        lines.append(f"| {corpus} | {n} ({told}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    report_main("python -m bench.messages", "messages.md", 100, run, markdown)


if __name__ == "__main__":
    main()
