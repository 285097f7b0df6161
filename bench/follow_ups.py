"""Retrieval inside a conversation: a question asked after another one.

Questions, each with the previous user turn as the conversation:

- **topic change** (every corpus): a development question after another question of the same
  corpus on another document. The previous turn should not matter.
- **topic change, every pair** (the support sets, small enough): each question after each
  other one on another document.
- **pointing back** (contoso): an FAQ question with its product replaced by "it" ("Can it be
  used in winter conditions?"), after "Tell me about the <product>."
- **no subject** (contoso): an FAQ question with "of/on/for… the <product>" removed ("Is there
  a warranty?"), after the same.
- **no subject** (JaQuAD): a question opening with its article's title, the title taken out
  ("何科の魚類ですか?"), after "<title>について教えてください。".
- **what to do** (the support sets): a problem told as a statement ("Paper is stuck in the
  printer", 「E01というエラーが表示されました」), then "What should I do?" /
  「どうすればいいですか？」, which names nothing of its own. Scored with the relevance cut-off
  on: a follow-up that finds nothing is refused, which is what a user would meet.
- **unanswerable** (every corpus with such questions): one the documents do not cover, after
  a development question. Scored as the share that finds no passage (the relevance cut-off
  on), which is what lets an answer say "not covered".

A hit is the question's own document ranked first (recall@1) or in the first five
(recall@5); the answer's passage (``bench.retrieval_quality``'s hit: from that document and
holding the answer) ranked first counts too, since a document found is not yet an answer.
Rankers, in one run: the question alone (no conversation); the question joined to the previous
turn and searched as one (the textbook way, and Tsumugi's before); Tsumugi
(``retrieve(..., context=[previous])``).

``python -m bench.follow_ups [--questions N]`` writes ``bench/results/follow_ups.md``.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from pathlib import Path

from bench.common import cpu_flags
from bench.retrieval_quality import DATA, ingested_corpora, is_hit, report_main

_NAME = re.compile(r"\bthe ((?:[A-Z][\w-]*\s?){2,})")
_OF_NAME = re.compile(r"\s+(?:of|for|on|in|with|to|from|about|using)\s+the\s+(?:[A-Z][\w-]*\s?){2,}")
RANKERS = ("question alone", "joined to the previous turn", "Tsumugi")


def every_pair(items: list[dict]) -> list[tuple[str, str, dict]]:
    """Each question after each other question on another document."""
    return [(item["q"], other["q"], item) for item in items for other in items if other["doc"] != item["doc"]]


def topic_changes(items: list[dict], seed: int = 0) -> list[tuple[str, str, dict]]:
    """(question, previous question on another document, the question's item)."""
    rng = random.Random(seed)
    cases = []
    for item in items:
        other = rng.choice(items)
        while other["doc"] == item["doc"]:
            other = rng.choice(items)
        cases.append((item["q"], other["q"], item))
    return cases


def contoso_follow_ups(items: list[dict]) -> dict[str, list[tuple[str, str, dict]]]:
    pointing, bare = [], []
    for item in items:
        name = _NAME.search(item["q"])
        if not name:
            continue
        named = name.group(1).strip()
        previous = f"Tell me about the {named}."
        pointed = item["q"].replace(f"the {named}'s", "its").replace(f"the {named}", "it")
        pointing.append((pointed, previous, item))
        if _OF_NAME.search(item["q"]):
            bare.append((_OF_NAME.sub(" ", item["q"]).replace(" ?", "?").strip(), previous, item))
    return {"pointing back": pointing, "no subject": bare}


def jaquad_follow_ups(items: list[dict], folder: Path) -> dict[str, list[tuple[str, str, dict]]]:
    bare = []
    for item in items:
        title = (folder / item["doc"]).read_text("utf-8").split("\n", 1)[0].strip()
        opening = re.match(re.escape(title) + "[のはがをにでも]", item["q"]) if title else None
        if opening and len(item["q"]) > opening.end() + 2:
            bare.append((item["q"][opening.end() :], f"{title}について教えてください。", item))
    return {"no subject": bare}


def what_to_do(items: list[dict]) -> dict[str, list[tuple[str, str, dict]]]:
    endings = ("?", "？", "か", "か。", "ください")  # a question, or a request ("…を教えてください")
    told = [item for item in items if not item["q"].rstrip().endswith(endings)]
    ask = (
        "どうすればいいですか？"
        if told and re.search(r"[ぁ-んァ-ン一-龥]", told[0]["q"])
        else "What should I do?"
    )
    return {"what to do": [(ask, item["q"], item) for item in told]}


def score(
    kb, cases: list[tuple[str, str, dict]], cutoff: bool = False
) -> dict[str, tuple[float, float, float]]:
    from knowledge.retrieve import RetrievalConfig, retrieve

    config = RetrievalConfig(top_k=5, cutoff=cutoff)
    searches = {
        "question alone": lambda q, previous: retrieve(kb, q, config),
        "joined to the previous turn": lambda q, previous: retrieve(kb, f"{previous} {q}", config),
        "Tsumugi": lambda q, previous: retrieve(kb, q, config, context=[previous]),
    }
    out = {}
    for name, search in searches.items():
        first = top5 = answer = 0
        for question, previous, item in cases:
            hits = search(question, previous)
            docs = [hit.doc for hit in hits]
            first += bool(docs) and docs[0] == item["doc"]
            top5 += item["doc"] in docs
            answer += bool(hits) and is_hit(hits[0].doc, hits[0].text, item)
        out[name] = (first / len(cases), top5 / len(cases), answer / len(cases))
    return out


def refused(kb, cases: list[tuple[str, str, None]]) -> dict[str, float]:
    """The share of ``cases`` (unanswerable questions) that find no passage."""
    from knowledge.retrieve import retrieve

    searches = {
        "question alone": lambda q, previous: retrieve(kb, q),
        "joined to the previous turn": lambda q, previous: retrieve(kb, f"{previous} {q}"),
        "Tsumugi": lambda q, previous: retrieve(kb, q, context=[previous]),
    }
    return {
        name: sum(not search(q, p) for q, p, _ in cases) / len(cases) for name, search in searches.items()
    }


def run(questions: int, data: Path = DATA) -> dict:
    results = {}
    for corpus, kb, items, unanswerable in ingested_corpora(questions, data):
        kinds = {"topic change": topic_changes(items)}
        if corpus == "contoso":
            kinds.update(contoso_follow_ups(items))
        if corpus == "jaquad":
            kinds.update(jaquad_follow_ups(items, data / "docs" / corpus))
        if corpus.endswith("-support"):
            kinds["topic change, every pair"] = every_pair(items)
            kinds.update(what_to_do(items))
        for kind, cases in kinds.items():
            results[(corpus, kind)] = (len(cases), score(kb, cases, cutoff=kind == "what to do"))
            print(corpus, kind, results[(corpus, kind)], flush=True)
        if unanswerable:
            rng = random.Random(1)
            cases = [(q, rng.choice(items)["q"], None) for q in unanswerable]
            results[(corpus, "unanswerable")] = (len(cases), refused(kb, cases))
            print(corpus, "unanswerable", results[(corpus, "unanswerable")], flush=True)
    return results


def markdown(results: dict, questions: int) -> str:
    lines = [
        "# Retrieval after a previous question",
        "",
        f"`python -m bench.follow_ups --questions {questions}` · {dt.date.today()} · CPU flags: {cpu_flags()}",
        "",
        "Each cell: recall@1 / recall@5 of the question's own document, and recall@1 of the answer's passage "
        "(from that document and holding the answer). See the module's docstring for the cases.",
        "",
        "| corpus | case (questions) | " + " | ".join(RANKERS) + " |",
        "|---|---|" + "---|" * len(RANKERS),
    ]
    refusals = []
    for (corpus, kind), (n, scores) in results.items():
        if kind == "unanswerable":
            cells = " | ".join(f"{scores[r]:.2f}" for r in RANKERS)
            refusals.append(f"| {corpus} | {kind} ({n}) | {cells} |")
            continue
        cells = " | ".join(f"{scores[r][0]:.2f} / {scores[r][1]:.2f} · {scores[r][2]:.2f}" for r in RANKERS)
        lines.append(f"| {corpus} | {kind} ({n}) | {cells} |")
    lines += [
        "",
        "Questions the documents do not cover, after a development question: the share that find no passage.",
        "",
        "| corpus | case (questions) | " + " | ".join(RANKERS) + " |",
        "|---|---|" + "---|" * len(RANKERS),
        *refusals,
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    report_main("python -m bench.follow_ups", "follow_ups.md", 300, run, markdown)


if __name__ == "__main__":
    main()
