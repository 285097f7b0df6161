"""Confidence calibration and question decomposition on the development corpus.

Confidence: every question of ``tests/data/eval/contoso-eval.csv`` (89 answerable, 10
unanswerable) and ``contoso-unanswerable.csv`` (30 more, near the domain) is answered by the
embedded model over the contoso manuals (top-5, no escalation). Reported: how well each
signal alone separates answerable from unanswerable questions (ROC AUC; the named baselines
are the mean token log-probability and the best retrieval similarity), the shipped
combination, a 5-fold cross-validated refit (so the figure is not measured on the data the
weights came from), and the share of questions below the default threshold (what would be
escalated). ``--fit`` prints weights refitted on all of it, for assistant/confidence.py.

Decomposition: two FAQ questions from different manuals joined into one ("… and …?").
Reported: the share of questions whose passages include both source manuals, for one
retrieval of the whole question at top-5 and at top-10 (the same passage budget as the
split), and for the split question.

``python -m bench.confidence [--fit] [--quick]``, or ``python -m bench --only confidence``.
"""

from __future__ import annotations

import argparse
import csv
import random
import tempfile
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "tests" / "data" / "eval"


CORPORA = {
    "contoso": ROOT.parent / "shared" / "data" / "contoso-manuals",
    "en-support": ROOT / "tests" / "data" / "en-support",
    "ja-support": ROOT / "tests" / "data" / "ja-support",
}


def _questions(quick: bool) -> list[tuple[str, str, bool]]:
    """(corpus, question, unanswerable) for the three development corpora."""
    import json

    rows = []
    for name in ("contoso-eval.csv", "contoso-unanswerable.csv"):
        with open(EVAL / name, encoding="utf-8") as fh:
            rows += [("contoso", r["question"], r.get("unanswerable") == "yes") for r in csv.DictReader(fh)]
    for corpus in ("en-support", "ja-support"):
        folder = CORPORA[corpus]
        rows += [(corpus, q["q"], False) for q in json.loads((folder / "questions.json").read_text("utf-8"))]
        rows += [(corpus, q, True) for q in json.loads((folder / "unanswerable.json").read_text("utf-8"))]
    if quick:
        rows = [r for n, r in enumerate(rows) if n % 6 == 0]
    return rows


def _app(model_cache: Path, data: Path):
    from assistant.config import Settings
    from assistant.service import Tsumugi

    app = Tsumugi(Settings(data_dir=data, model_cache=model_cache))
    for name, folder in CORPORA.items():
        deque(app.ingest(name, [folder]), maxlen=0)
    return app


def collect(app, rows) -> list[dict]:
    from assistant.answer import AnswerConfig

    config = AnswerConfig(escalate=False, max_new_tokens=128)
    out = []
    for n, (corpus, question, unanswerable) in enumerate(rows, 1):
        answer = deque(app.ask(corpus, question, config=config), maxlen=1)[0]
        out.append(
            {
                "corpus": corpus,
                "question": question,
                "unanswerable": unanswerable,
                "covered": answer.covered,
                "confidence": answer.confidence,
                "signals": answer.signals,
                "answer": answer.text,
            }
        )
        print(f"\r  confidence: {n}/{len(rows)} questions", end="", flush=True)
    print()
    return out


def rescore(items: list[dict]) -> list[dict]:
    """Recompute each answer's confidence with the shipped weights (signals from a dump)."""
    from assistant import confidence as conf

    for item in items:
        if not item["covered"]:
            continue
        signals = dict(item["signals"])
        signals.setdefault("cited", conf.cited_share(item["answer"]))
        signals = {name: signals[name] for name in conf.FEATURES}
        item["signals"] = signals
        item["confidence"] = conf.score(conf.Signals(**signals))
    return items


def _matrix(items: list[dict]):
    import numpy as np

    from assistant.confidence import FEATURES

    # A question refused by the relevance cut-off has no signals: the model never answered.
    x = np.array(
        [
            [i["signals"].get(f, 0.0) for f in FEATURES] if i["covered"] else [0.0] * len(FEATURES)
            for i in items
        ]
    )
    y = np.array([0 if i["unanswerable"] else 1 for i in items])
    return x, y


def _auc(scores, labels) -> float | None:
    from assistant.confidence import roc_auc

    pos = [s for s, label in zip(scores, labels, strict=True) if label == 1]
    neg = [s for s, label in zip(scores, labels, strict=True) if label == 0]
    return roc_auc(pos, neg)


def analyse(items: list[dict], fit: bool = False) -> dict:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from assistant.confidence import DEFAULT_THRESHOLD, FEATURES

    x, y = _matrix(items)
    confidence = [i["confidence"] for i in items]
    result = {
        "questions": len(items),
        "answerable": int(y.sum()),
        "unanswerable": int((1 - y).sum()),
        "refused_by_cutoff": sum(not i["covered"] for i in items),
        "auc_shipped": _auc(confidence, y),
        "auc_by_signal": {f: _auc(list(x[:, k]), y) for k, f in enumerate(FEATURES)},
    }
    # The relevance cut-off refuses some questions before any model runs: not escalated.
    low = [i["covered"] and c < DEFAULT_THRESHOLD for i, c in zip(items, confidence, strict=True)]
    # Held out: each corpus scored with weights fitted on the other two.
    corpora = np.array([i["corpus"] for i in items])
    cv_scores = np.zeros(len(y))
    for corpus in sorted(set(corpora)):
        test = corpora == corpus
        if len(set(y[~test])) < 2:
            continue
        model = LogisticRegression(C=0.3, max_iter=5000).fit(x[~test], y[~test])
        cv_scores[test] = model.predict_proba(x[test])[:, 1]
    result["auc_held_out_corpus"] = _auc(list(cv_scores), y)
    result["by_corpus"] = {}
    for corpus in sorted(set(corpora)):
        mask = corpora == corpus
        conf_c = [c for c, m in zip(confidence, mask, strict=True) if m]
        low_c = [lo for lo, m in zip(low, mask, strict=True) if m]
        result["by_corpus"][corpus] = {
            "answerable": int(y[mask].sum()),
            "unanswerable": int((1 - y[mask]).sum()),
            "auc": _auc(conf_c, list(y[mask])),
            "auc_token_logprob": _auc(list(x[mask, 0]), list(y[mask])),
            "escalated_share": sum(low_c) / len(low_c),
            "refused_share": sum(not i["covered"] for i, m in zip(items, mask, strict=True) if m)
            / int(mask.sum()),
        }
    result["threshold"] = DEFAULT_THRESHOLD
    result["escalated_share"] = sum(low) / len(low)
    result["escalated_share_answerable"] = sum(lo for lo, label in zip(low, y, strict=True) if label) / max(
        1, y.sum()
    )
    result["escalated_share_unanswerable"] = sum(
        lo for lo, label in zip(low, y, strict=True) if not label
    ) / max(1, (1 - y).sum())
    if fit:
        model = LogisticRegression(C=0.3, max_iter=5000).fit(x, y)
        result["fitted_weights"] = [round(float(w), 2) for w in model.coef_[0]]
        result["fitted_bias"] = round(float(model.intercept_[0]), 2)
    return result


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
    from assistant.decompose import gather_passages, split_question
    from assistant.metrics import holds_answer
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
        parts = split_question(question, model)
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


def run(model_cache: Path, quick: bool = False, fit: bool = False, dump: Path | None = None) -> list[dict]:
    import json

    with tempfile.TemporaryDirectory() as tmp:
        app = _app(model_cache, Path(tmp))
        items = collect(app, _questions(quick))
        if dump:
            dump.write_text(json.dumps(items, ensure_ascii=False, indent=1), "utf-8")
        confidence = {"stage": "confidence", "baseline": "one signal alone", **analyse(items, fit)}
        decomposed = {
            "stage": "decomposition",
            "baseline": "one retrieval of the whole question",
            **decomposition(app, quick),
        }
    return [confidence, decomposed]


def rows_markdown(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        if r["stage"] == "confidence":
            signals = ", ".join(f"{k} {v:.3f}" for k, v in r["auc_by_signal"].items() if v is not None)
            lines.append(
                f"| confidence, {r['answerable']} answerable vs {r['unanswerable']} unanswerable | ROC AUC "
                f"{r['auc_shipped']:.3f} (refit with each corpus held out {r['auc_held_out_corpus']:.3f}); below "
                f"{r['threshold']:.2f}: {r['escalated_share']:.1%} of questions "
                f"({r['escalated_share_answerable']:.1%} of answerable, "
                f"{r['escalated_share_unanswerable']:.1%} of unanswerable); refused by the relevance cut-off "
                f"{r['refused_by_cutoff']} | {signals} | "
                f"AUC ×{r['auc_shipped'] / r['auc_by_signal']['token_logprob']:.2f} vs token probability |"
            )
        elif r["stage"] == "decomposition":
            lines.append(
                f"| decomposition, {r['questions']} messages of 2-3 FAQ questions ({r['split']} split) | "
                f"every part's answer passage retrieved {r['answer_passages_split']:.1%} "
                f"({r['mean_passages_split']:.1f} passages) | one retrieval: top-5 "
                f"{r['answer_passages_single_top5']:.1%}, same number of passages "
                f"{r['answer_passages_single_same_budget']:.1%} | "
                f"+{(r['answer_passages_split'] - r['answer_passages_single_same_budget']) * 100:.1f} points |"
            )
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.confidence")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--fit", action="store_true", help="print weights refitted on all questions")
    parser.add_argument("--model-cache", type=Path, default=ROOT / "data" / "models")
    parser.add_argument("--dump", type=Path, help="write every question's signals and answer here")
    parser.add_argument(
        "--from-dump",
        type=Path,
        help="analyse a dump written by --dump again (no answering; confidence only)",
    )
    args = parser.parse_args()
    import json

    if args.from_dump:
        items = rescore(json.loads(args.from_dump.read_text("utf-8")))
        rows = [{"stage": "confidence", "baseline": "one signal alone", **analyse(items, args.fit)}]
    else:
        rows = run(args.model_cache, args.quick, args.fit, args.dump)
    table = "\n".join(["| measure | Tsumugi | baseline | gain |", "|---|---|---|---|", *rows_markdown(rows)])
    print(table)
    print(json.dumps(rows, indent=2, ensure_ascii=False))
    if not args.quick:
        out = ROOT / "bench" / "results"
        previous = out / "confidence.json"
        kept = []
        if previous.exists():  # --from-dump redoes the confidence rows only
            kept = [
                r
                for r in json.loads(previous.read_text("utf-8"))
                if r["stage"] not in {x["stage"] for x in rows}
            ]
        rows = kept + rows
        previous.write_text(json.dumps(rows, indent=2, ensure_ascii=False), "utf-8")
        (out / "confidence.md").write_text(
            "\n".join(["| measure | Tsumugi | baseline | gain |", "|---|---|---|---|", *rows_markdown(rows)])
            + "\n",
            "utf-8",
        )
