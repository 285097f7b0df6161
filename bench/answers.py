"""Answer quality per corpus: the evidence-first styles against the previous generator and two
extractive baselines, all on the same questions in one run.

Corpora (each ingested fresh into a temporary data folder):

- contoso: the 20 manuals **with their ``## FAQ`` sections removed**, asked their FAQ questions
  (``tests/data/eval/contoso-faq.csv``), so answers must come from the product descriptions;
- jaquad: JaQuAD dev's 1,431 Japanese Wikipedia paragraphs, questions sampled evenly;
- en-support, ja-support: the project's IT-support and shop FAQ sets with reference answers.

Rows: the previous generator (the model's text with citations fixed, and the passages'
closest sentences for garbled Japanese, as answering worked before evidence-first), the first
passage as is, the best-three-sentence extract (sentences sharing most question words), and
each answer style. Columns:

- F1: token F1 against the reference answer (SQuAD-style words; characters for Japanese);
- unsupported: share of answer sentences that their cited passage does not support, decided
  by :func:`assistant.answering.evidence.supported` (75% of informative terms in the passage, numbers,
  quoted names and menu steps verbatim, the same polarity as the closest passage sentence,
  cosine 0.5 to a passage sentence where the embedder reads the language). A sentence
  without a citation counts as unsupported;
- citation precision: share of cited sentences whose passage comes from the reference
  document (JaQuAD: the gold paragraph, holding the answer);
- AUROC: confidence ranking right answers (holding at least half of the reference answer's
  tokens) above wrong ones, each corpus scored with weights fitted on the other corpora (fitted,
  like the shipped ones, to answered answerable versus unanswerable questions); "with
  unanswerable" counts the answers to unanswerable questions as wrong too;
- latency p50/p95 in seconds, question to full answer (extractive baselines: retrieval).

``python -m bench.answers [--questions N] [--fit]``; ``--fit`` writes the weights fitted on
every corpus to ``assistant/confidence.json``. Also ``python -m bench --only answers``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import tempfile
import time
from collections import deque
from pathlib import Path

from bench.common import without_faq

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
ROWS = ("previous generator", "first passage", "best-3 extract", "quote", "concise", "detailed")
UNANSWERABLE_SHARE = 40
"""Unanswerable questions added per corpus, as a percentage of the answerable ones sampled."""
STYLED = {"previous generator": "unchecked", "quote": "quote", "concise": "concise", "detailed": "detailed"}


# -- corpora --------------------------------------------------------------------------------


def _contoso(folder: Path) -> list[dict]:
    for path in sorted((SHARED / "contoso-manuals").glob("*.md")):
        text = path.read_text(encoding="utf-8")
        folder.joinpath(path.name).write_text(without_faq(text), "utf-8")
    with open(ROOT / "tests" / "data" / "eval" / "contoso-faq.csv", encoding="utf-8") as fh:
        answerable = [{"q": r["question"], "a": r["answer"], "doc": r["source"]} for r in csv.DictReader(fh)]
    with open(ROOT / "tests" / "data" / "eval" / "contoso-unanswerable.csv", encoding="utf-8") as fh:
        return answerable, [r["question"] for r in csv.DictReader(fh)]


def _jaquad(folder: Path) -> list[dict]:
    data = SHARED / "jaquad-dev"
    for line in (data / "paragraphs.jsonl").read_text(encoding="utf-8").splitlines():
        p = json.loads(line)
        folder.joinpath(f"{p['id']}.txt").write_text(f"{p['title']}\n\n{p['text']}\n", "utf-8")
    rows = [json.loads(line) for line in (data / "questions.jsonl").read_text(encoding="utf-8").splitlines()]
    # JaQuAD has no unanswerable questions.
    return [{"q": r["question"], "a": r["answer"], "doc": f"{r['paragraph']}.txt"} for r in rows], []


def _support_set(name: str):
    def load(folder: Path) -> list[dict]:
        source = ROOT / "tests" / "data" / name
        for path in source.glob("*.md"):
            folder.joinpath(path.name).write_text(path.read_text(encoding="utf-8"), "utf-8")
        answerable = json.loads((source / "questions.json").read_text(encoding="utf-8"))
        return answerable, json.loads((source / "unanswerable.json").read_text(encoding="utf-8"))

    return load


CORPORA = {
    "contoso": _contoso,
    "jaquad": _jaquad,
    "en-support": _support_set("en-support"),
    "ja-support": _support_set("ja-support"),
}


def _sample(rows: list[dict], n: int) -> list[dict]:
    if n <= 0 or n >= len(rows):
        return rows
    step = len(rows) / n
    return [rows[int(i * step)] for i in range(n)]


# -- the previous generator's Japanese fallback and the crude extract -------------------------


def best_sentences(question: str, hits, limit: int = 3) -> str:
    """The passage sentences sharing the most informative words with the question, cited."""
    from knowledge.lexical import content_terms, is_japanese, terms
    from knowledge.text import cite, sentences

    wanted = set(content_terms(terms(question)))
    scored = []
    for n, hit in enumerate(hits, start=1):
        for order, sentence in enumerate(sentences(hit.text)):
            sentence = sentence.strip().lstrip("#*- ").strip()
            if len(sentence) >= 6:
                scored.append((-len(wanted & set(content_terms(terms(sentence)))), n, order, sentence))
    scored.sort()
    chosen = sorted(scored[:limit], key=lambda t: (t[1], t[2]))
    return ("" if is_japanese(question) else " ").join(cite(s, n) for _, n, _, s in chosen)


def _garbled_japanese(text: str, hits) -> bool:
    """The previous generator's test for a Japanese answer not to show."""
    from knowledge.lexical import content_terms, is_japanese, terms
    from knowledge.text import strip_citations

    if not is_japanese(text):
        return True
    words = set(content_terms(terms(strip_citations(text))))
    found = {t for h in hits for t in terms(h.text)}
    if not words or len(words & found) / len(words) < 0.8:
        return True
    flat = re.sub(r"\s+|\[\d{1,2}\]", "", text)
    pieces = [flat[i : i + 12] for i in range(len(flat) - 11)]
    return len(pieces) != len(set(pieces))


# -- scoring --------------------------------------------------------------------------------


def _sentence_scores(text: str, hits, item: dict, embedder) -> tuple[int, int, int, int]:
    """(sentences, unsupported, cited, cited correctly) of one answer."""
    from assistant.answering.evidence import supported
    from assistant.evaluation.metrics import holds_answer
    from knowledge.text import CITATION, LIST_MARKER, split_sentences

    total = bad = cited = good = 0
    # A mark covers the unmarked sentences just before it in the same paragraph or list
    # (a quoted list carries one mark, after its last item).
    marks: list[list[int]] = []
    pending: list[int] = []
    pieces = [(s, sep) for s, sep in split_sentences(text)]
    for k, (sentence, sep) in enumerate(pieces):
        if "\n\n" in sep:
            pending = []
        numbers = [int(n) for n in CITATION.findall(sentence) if 1 <= int(n) <= len(hits)]
        marks.append(numbers)
        if numbers:
            for j in pending:
                marks[j] = numbers
            pending = []
        else:
            pending.append(k)
    for (sentence, _), numbers in zip(pieces, marks, strict=True):
        plain = LIST_MARKER.sub("", CITATION.sub("", sentence)).strip()
        if len(plain) < 4 or re.fullmatch(r"[\W\d]+", plain):
            continue
        total += 1
        if not numbers or not any(supported(plain, hits[n - 1].text, embedder) for n in numbers):
            bad += 1
        if numbers:
            cited += 1
            expected = item["a"] if item["corpus"] == "jaquad" else ""
            doc = item["doc"]
            hit = hits[numbers[0] - 1]
            good += holds_answer(hit.doc, hit.text, doc, "") and (not expected or expected in hit.text)
    return total, bad, cited, good


FIT_C = 0.3
"""Inverse regularisation strength of the logistic fit."""


def _label(record: dict) -> int:
    """What the weights are fitted to: the question is answerable. Fitted to right-versus-wrong
    answers instead, the weights changed sign from one left-out corpus to the next (20-25
    answers per corpus, most of them right), and ranked right above wrong no better."""
    return int(not record["unanswerable"])


def _auroc_loco(records: list[dict], answerable_only: bool) -> dict[str, float | None]:
    """Per corpus: AUROC of confidence from weights fitted on the other corpora (fitted and
    scored on answerable questions alone, or with the answers to unanswerable ones as wrong)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from assistant.answering.confidence import FEATURES, capped
    from assistant.evaluation.metrics import roc_auc

    out: dict[str, float | None] = {}
    # Weights are fitted with every answered question (answerable or not) of the other corpora;
    # the score is then judged on right versus wrong answers of this one.
    usable = [r for r in records if r.get("signals")]
    for corpus in sorted({r["corpus"] for r in records}):
        train = [r for r in usable if r["corpus"] != corpus]
        test = [r for r in usable if r["corpus"] == corpus and not (answerable_only and r["unanswerable"])]
        labels = {_label(r) for r in train}
        if not test or len(labels) < 2:
            out[corpus] = None
            continue
        x = np.array([[r["signals"][f] for f in FEATURES] for r in train])
        model = LogisticRegression(C=FIT_C, class_weight="balanced", max_iter=5000).fit(
            x, [_label(r) for r in train]
        )
        p = model.predict_proba(np.array([[r["signals"][f] for f in FEATURES] for r in test]))[:, 1]
        # As Tsumugi scores (a record from before the check has no number_given: not capped).
        p = [capped(s, r["signals"].get("number_given", 1.0)) for s, r in zip(p, test, strict=True)]
        out[corpus] = roc_auc(
            [s for s, r in zip(p, test, strict=True) if r["correct"]],
            [s for s, r in zip(p, test, strict=True) if not r["correct"]],
        )
    return out


def fit_weights(records: list[dict]) -> dict:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from assistant.answering.confidence import FEATURES

    rows = [r for r in records if r.get("signals")]
    x = np.array([[r["signals"][f] for f in FEATURES] for r in rows])
    model = LogisticRegression(C=FIT_C, class_weight="balanced", max_iter=5000).fit(
        x, [_label(r) for r in rows]
    )
    return {
        "features": list(FEATURES),
        "weights": [round(float(w), 3) for w in model.coef_[0]],
        "bias": round(float(model.intercept_[0]), 3),
        "questions": len(rows),
    }


# -- the run --------------------------------------------------------------------------------


def collect(app, corpus: str, items: list[dict], rows=ROWS) -> list[dict]:
    from assistant.answering.answer import AnswerConfig, gather_passages
    from assistant.answering.prompt import language_of
    from assistant.evaluation.metrics import is_correct, token_f1
    from knowledge.embed import get_embedder
    from knowledge.retrieve import RetrievalConfig
    from knowledge.text import cite, strip_citations

    kb = app.library.get(corpus)
    embedder = get_embedder(kb.embed_model)
    records = []
    for k, item in enumerate(items, 1):
        item = {**item, "corpus": corpus}
        started = time.perf_counter()
        hits = gather_passages(kb, [item["q"]], RetrievalConfig())
        retrieval_s = time.perf_counter() - started
        for row in rows:
            signals, started = None, time.perf_counter()
            if row in STYLED:
                config = AnswerConfig(style=STYLED[row], escalate=False, max_new_tokens=128)
                answer = deque(app.ask(corpus, item["q"], config=config, source=None), maxlen=1)[0]
                text, answer_hits = answer.text, answer.passages
                if row == "previous generator" and language_of(item["q"]) == "ja" and answer_hits:
                    if _garbled_japanese(text, answer_hits):
                        text = best_sentences(item["q"], answer_hits)
                signals = answer.signals if row != "previous generator" else None
                latency = time.perf_counter() - started
            else:
                answer_hits = hits
                if not hits:
                    text = ""
                elif row == "first passage":
                    text = cite(hits[0].text, 1)
                else:
                    text = best_sentences(item["q"], hits)
                latency = retrieval_s
            # A refusal ("not covered") makes no claim: it has no sentences to support.
            refused = not answer_hits
            total, bad, cited, good = (
                (0, 0, 0, 0) if refused else _sentence_scores(text, answer_hits, item, embedder)
            )
            records.append(
                {
                    "corpus": corpus,
                    "row": row,
                    "question": item["q"],
                    "expected": item["a"],
                    "answer": text,
                    "unanswerable": bool(item.get("unanswerable")),
                    "refused": refused,
                    "f1": None if item.get("unanswerable") else token_f1(strip_citations(text), item["a"]),
                    # An answer to a question the documents cannot answer is wrong.
                    "correct": False if item.get("unanswerable") else is_correct(text, item["a"]),
                    "sentences": total,
                    "unsupported": bad,
                    "cited": cited,
                    "cited_good": good,
                    "latency_s": latency,
                    "signals": signals,
                }
            )
        print(f"\r  answers: {corpus} {k}/{len(items)}", end="", flush=True)
    print()
    return records


def summarise(records: list[dict]) -> dict:
    from assistant.evaluation.metrics import _percentile

    table: dict = {}
    for row in ROWS:
        mine = [r for r in records if r["row"] == row]
        if not mine:
            continue
        scored = any(r["signals"] for r in mine)
        auroc = _auroc_loco(mine, answerable_only=True) if scored else {}
        auroc_all = _auroc_loco(mine, answerable_only=False) if scored else {}
        for corpus in sorted({r["corpus"] for r in mine}):
            rs = [r for r in mine if r["corpus"] == corpus]
            answerable = [r for r in rs if not r["unanswerable"]]
            unanswerable = [r for r in rs if r["unanswerable"]]
            sentences = sum(r["sentences"] for r in rs)
            cited = sum(r["cited"] for r in answerable)
            latencies = [r["latency_s"] for r in rs]
            table.setdefault(corpus, {})[row] = {
                "questions": len(answerable),
                "unanswerable_questions": len(unanswerable),
                "f1": sum(r["f1"] for r in answerable) / len(answerable),
                "correct": sum(r["correct"] for r in answerable) / len(answerable),
                "unsupported": sum(r["unsupported"] for r in rs) / sentences if sentences else None,
                "citation_precision": sum(r["cited_good"] for r in answerable) / cited if cited else None,
                "auroc": auroc.get(corpus),
                "auroc_with_unanswerable": auroc_all.get(corpus) if unanswerable else None,
                "latency_p50_s": _percentile(latencies, 0.5),
                "latency_p95_s": _percentile(latencies, 0.95),
            }
    return table


def markdown(table: dict, meta: dict) -> str:
    def f(v, spec=".2f"):
        return "—" if v is None else format(v, spec)

    lines = [
        "# Answer quality: evidence-first styles against the previous generator and extractive baselines",
        "",
        f"`python -m bench.answers --questions {meta['questions']}` on {meta['date']}; "
        f"CPU: {meta['cpu']} ({meta['cores']} cores), flags: {meta['flags']}; precision: {meta['precision']}.",
        "How each column is decided: see the docstring of `bench/answers.py`. "
        "Correct (for AUROC): the answer holds at least half of the reference answer's tokens.",
        "",
    ]
    for corpus, rows in table.items():
        first = next(iter(rows.values()))
        lines += [
            f"## {corpus} ({first['questions']} answerable questions"
            + (
                f", {first['unanswerable_questions']} unanswerable)"
                if first["unanswerable_questions"]
                else ")"
            ),
            "",
            "| answer | F1 | correct | unsupported sentences | citation precision | AUROC right vs wrong "
            "| AUROC with unanswerable | latency p50 / p95 (s) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row, r in rows.items():
            lines.append(
                f"| {row} | {f(r['f1'])} | {f(r['correct'])} | {f(r['unsupported'], '.1%')} "
                f"| {f(r['citation_precision'])} | {f(r['auroc'])} | {f(r['auroc_with_unanswerable'])} "
                f"| {f(r['latency_p50_s'])} / {f(r['latency_p95_s'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def run(
    questions: int = 25,
    fit: bool = False,
    rows=ROWS,
    model_cache: Path | None = None,
    data_dir: Path | None = None,
) -> dict:
    import datetime as dt

    from assistant.config import Settings
    from assistant.serving.service import Tsumugi
    from bench.common import cpu_flags, machine

    records: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(data_dir or tmp)
        cache = model_cache or ROOT / "data" / "models"  # the converted model, kept between runs
        app = Tsumugi(Settings(data_dir=root / "data", model_cache=cache))
        for corpus, load in CORPORA.items():
            folder = root / corpus
            folder.mkdir(parents=True, exist_ok=True)
            answerable, unanswerable = load(folder)
            items = _sample(answerable, questions) + [
                {"q": q, "a": "", "doc": "", "unanswerable": True}
                for q in _sample(unanswerable, max(1, questions * UNANSWERABLE_SHARE // 100))
            ]
            if corpus not in app.library.names():  # --data keeps knowledge bases between runs
                files = sorted(folder.iterdir())
                for start in range(0, len(files), 400):  # under the per-upload file limit
                    deque(app.ingest(corpus, files[start : start + 400]), maxlen=0)
            records += collect(app, corpus, items, rows)
        precision = app.chat_model().precision
    meta = {**machine(), "flags": cpu_flags(), "questions": questions, "precision": precision}
    meta["date"] = dt.date.today().isoformat()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "answers-records.json").write_text(json.dumps(records, ensure_ascii=False, indent=1), "utf-8")
    (RESULTS / "answers-meta.json").write_text(json.dumps(meta, indent=1), "utf-8")
    return report(records, meta, fit)


def report(records: list[dict], meta: dict, fit: bool) -> dict:
    """Write ``answers.md`` from the records; with ``fit``, the shipped confidence weights too."""
    table = summarise(records)
    (RESULTS / "answers.md").write_text(markdown(table, meta), "utf-8")
    if fit:
        from assistant.answering.confidence import SHIPPED
        from assistant.generation.config import EMBEDDED_MODEL

        styles = {
            row: fit_weights([r for r in records if r["row"] == row])
            for row in ("quote", "concise", "detailed")
            if any(r["row"] == row and r["signals"] for r in records)
        }
        SHIPPED.write_text(
            json.dumps(
                {
                    "model": EMBEDDED_MODEL,
                    "fitted": "python -m bench.answers --fit: logistic regression (C=0.3, balanced classes) of answered "
                    f"answerable versus unanswerable questions on {', '.join(CORPORA)}, {meta['date']}",
                    "styles": styles,
                },
                indent=1,
            ),
            "utf-8",
        )
    return {"table": table, "meta": meta}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=25, help="questions per corpus, sampled evenly")
    parser.add_argument("--fit", action="store_true", help="write fitted confidence weights")
    parser.add_argument("--rows", nargs="*", choices=ROWS, help="only these rows")
    parser.add_argument("--data", type=Path, help="keep the ingested corpora in this folder between runs")
    parser.add_argument(
        "--from-records",
        action="store_true",
        help="score and fit again from the last run's records (no answering)",
    )
    args = parser.parse_args()
    if args.from_records:
        records = json.loads((RESULTS / "answers-records.json").read_text("utf-8"))
        meta = json.loads((RESULTS / "answers-meta.json").read_text("utf-8"))
        result = report(records, meta, args.fit)
        print((RESULTS / "answers.md").read_text("utf-8"))
        return result
    result = run(args.questions, args.fit, tuple(args.rows or ROWS), data_dir=args.data)
    print((RESULTS / "answers.md").read_text("utf-8"))
    return result


if __name__ == "__main__":
    main()
