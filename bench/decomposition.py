"""Question decomposition on the development corpus.

Two or three contoso FAQ questions from different manuals joined into one message
("… and …?"). Reported: the share of messages whose passages include every part's answer,
for one retrieval of the whole message at top-5 and at the same number of passages as the
split, and for the split message.

``python -m bench.decomposition [--quick]``. (Confidence is measured with the answers it
scores: ``python -m bench.answers``.)
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "tests" / "data" / "eval"
CONTOSO = ROOT.parent / "shared" / "data" / "contoso-manuals"


def decomposition_questions(quick: bool) -> list[tuple[str, list[tuple[str, str]]]]:
    """Two or three FAQ questions from different manuals in one message:
    (message, [(source, expected answer) per part])."""
    with open(EVAL / "contoso-faq.csv", encoding="utf-8") as fh:
        pairs = [(r["question"], r["source"], r["answer"]) for r in csv.DictReader(fh)]
    rng = random.Random(7)
    out = []
    size = 10 if quick else 40
    while len(out) < size:
        k = 2 if len(out) < size // 2 else 3
        chosen = rng.sample(pairs, k)
        if len({s for _, s, _ in chosen}) < k:
            continue
        qs = [q for q, _, _ in chosen]
        if k == 2:
            message = f"{qs[0].rstrip('?')}, and {qs[1][0].lower()}{qs[1][1:]}"
        else:
            message = " ".join(qs)
        out.append((message, [(s, a) for _, s, a in chosen]))
    return out


def decomposition(app, quick: bool) -> dict:
    """Share of messages for which every part's answer passage (and manual) was retrieved."""
    from assistant.answering.decompose import gather_passages, split_question
    from assistant.evaluation.metrics import holds_answer
    from knowledge.retrieve import RetrievalConfig, retrieve

    kb = app.library.get("contoso")
    model = app.chat_model()
    names = ("single_top5", "single_same_budget", "split")
    passages = dict.fromkeys(names, 0)
    manuals = dict.fromkeys(names, 0)
    sizes = dict.fromkeys(names, 0)
    split_count = 0
    examples = []
    questions = decomposition_questions(quick)
    for n, (question, parts_truth) in enumerate(questions, 1):
        parts = [p.text for p in split_question(question, model)]
        split_count += len(parts) > 1
        split_hits = gather_passages(kb, parts, RetrievalConfig(top_k=5))
        runs = {
            "single_top5": retrieve(kb, question, RetrievalConfig(top_k=5)),
            # as many passages as the split gave the model, from one retrieval
            "single_same_budget": retrieve(kb, question, RetrievalConfig(top_k=max(5, len(split_hits)))),
            "split": split_hits,
        }
        got = {}
        for name, hits in runs.items():
            sizes[name] += len(hits)
            got[name] = all(any(holds_answer(h.doc, h.text, "", a) for h in hits) for _, a in parts_truth)
            passages[name] += got[name]
            manuals[name] += all(any(h.doc == s for h in hits) for s, _ in parts_truth)
        if got["split"] and not got["single_same_budget"] and len(examples) < 5:
            examples.append({"question": question, "parts": parts})
        print(f"\r  decomposition: {n}/{len(questions)} questions", end="", flush=True)
    print()
    total = len(questions)
    return {
        "questions": total,
        "split": split_count,
        **{f"answer_passages_{k}": v / total for k, v in passages.items()},
        **{f"manuals_{k}": v / total for k, v in manuals.items()},
        **{f"mean_passages_{k}": v / total for k, v in sizes.items()},
        "examples": examples,
    }


def run(model_cache: Path, quick: bool = False) -> dict:
    from assistant.config import Settings
    from assistant.serving.service import Tsumugi

    with tempfile.TemporaryDirectory() as tmp:
        app = Tsumugi(Settings(data_dir=Path(tmp), model_cache=model_cache))
        deque(app.ingest("contoso", [CONTOSO]), maxlen=0)
        return {
            "stage": "decomposition",
            "baseline": "one retrieval of the whole question",
            **decomposition(app, quick),
        }


def markdown(r: dict) -> str:
    return "\n".join(
        [
            "| measure | Tsumugi | baseline | gain |",
            "|---|---|---|---|",
            f"| decomposition, {r['questions']} messages of 2-3 FAQ questions ({r['split']} split) | "
            f"every part's answer passage retrieved {r['answer_passages_split']:.1%} "
            f"({r['mean_passages_split']:.1f} passages) | one retrieval: top-5 "
            f"{r['answer_passages_single_top5']:.1%}, same number of passages "
            f"{r['answer_passages_single_same_budget']:.1%} | "
            f"+{(r['answer_passages_split'] - r['answer_passages_single_same_budget']) * 100:.1f} points |",
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.decomposition")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model-cache", type=Path, default=ROOT / "data" / "models")
    args = parser.parse_args()
    row = run(args.model_cache, args.quick)
    print(markdown(row))
    if not args.quick:
        out = ROOT / "bench" / "results"
        (out / "decomposition.json").write_text(json.dumps(row, indent=2, ensure_ascii=False), "utf-8")
        (out / "decomposition.md").write_text(markdown(row) + "\n", "utf-8")
