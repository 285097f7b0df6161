"""Command line: ``python -m assistant <command>``. Progress on stderr, results on stdout."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from collections.abc import Generator
from pathlib import Path
from typing import TypeVar

from knowledge.errors import ConfigError, TsumugiError
from knowledge.progress import Progress

T = TypeVar("T")


class ProgressPrinter:
    """A progress bar with counts and ETA on stderr (one line per update when not a terminal)."""

    def __init__(self, stream=sys.stderr, interval: float = 0.5) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = interval
        self._last = 0.0

    def show(self, event: Progress) -> None:
        now = time.monotonic()
        if now - self._last < self.interval and event.done < event.total:
            return
        self._last = now
        width = 24
        filled = int(round(event.fraction * width))
        line = f"[{'#' * filled}{'.' * (width - filled)}] {event.describe()}"
        if self.tty:
            self.stream.write("\r\033[K" + line[:160])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def drive(gen: Generator[Progress, None, T], printer: ProgressPrinter | None) -> T:
    """Run a progress generator to its end, showing each event; return its result."""
    try:
        while True:
            event = next(gen)
            if printer:
                printer.show(event)
    except StopIteration as stop:
        return stop.value
    finally:
        if printer:
            printer.close()


def _cmd_ingest(app, args) -> int:
    results = drive(
        app.ingest(args.kb, args.paths, chunk_size=args.chunk_size), None if args.quiet else ProgressPrinter()
    )
    failed = [r for r in results if r.status == "failed"]
    if args.json:
        print(json.dumps([r.__dict__ for r in results], ensure_ascii=False, indent=2))
    else:
        for r in results:
            print(f"{r.status:9} {r.name}: {r.message}")
        counts = {s: sum(r.status == s for r in results) for s in ("added", "updated", "unchanged", "failed")}
        print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no files", file=sys.stderr)
    return 1 if failed and len(failed) == len(results) else 0


def _cmd_list(app, args) -> int:
    if args.kb:
        kb = app.library.get(args.kb)
        rows = [d.__dict__ for d in kb.documents()]
        if args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=2))
        for d in [] if args.json else kb.documents():
            pages = f"{d.pages} pages" if d.pages else d.kind
            print(f"{d.chunks:6} chunks  {pages:10}  {d.name}")
        return 0
    bases = []
    for name in app.library.names():
        kb = app.library.get(name)
        bases.append(
            {
                "name": name,
                "documents": len(kb.documents()),
                "chunks": kb.count_chunks(),
                "embed_model": kb.embed_model,
            }
        )
    if args.json:
        print(json.dumps(bases, ensure_ascii=False, indent=2))
    for b in [] if args.json else bases:
        print(f"{b['name']}: {b['documents']} documents, {b['chunks']} chunks, {b['embed_model']}")
    return 0


def _cmd_reembed(app, args) -> int:
    from knowledge.ingest import reembed

    count = drive(reembed(app.library.get(args.kb), args.model), ProgressPrinter())
    print(f"Re-embedded {count} chunks of {args.kb} with {args.model}.")
    return 0


def _retrieval_config(args, cutoff: bool):
    from knowledge.retrieve import RetrievalConfig

    return RetrievalConfig(top_k=args.top_k, mode=args.mode, cutoff=cutoff)


def _cmd_search(app, args) -> int:
    # A search shows the ranking; each hit says whether it passed the relevance cut-off,
    # and --cutoff drops those that did not (as answering does).
    hits = app.search(args.kb, args.query, _retrieval_config(args, cutoff=args.cutoff))
    if args.json:
        print(json.dumps([h.to_json() for h in hits], ensure_ascii=False, indent=2))
        return 0
    if not hits:
        print("No relevant passages.")
    for n, hit in enumerate(hits, start=1):
        where = hit.doc + (f" p.{hit.page}" if hit.page else "")
        flag = "" if hit.relevant else "  (below the relevance cut-off)"
        print(f"[{n}] {where}  score={hit.score:.3f}  {hit.heading}{flag}")
        print("    " + hit.text[:300].replace("\n", "\n    "))
    return 0


def _cmd_ask(app, args) -> int:
    from assistant.answer import AnswerConfig

    config = AnswerConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        retrieval=_retrieval_config(args, cutoff=not args.no_cutoff),
        style=args.style,
    )
    print("Loading the model…", file=sys.stderr)
    model = app.model_config(args.adapter)
    app.chat_model(model)
    stream = sys.stdout.isatty() and not args.json
    answer = None
    shown = ""
    for answer in app.ask(args.kb, args.question, config=config, model=model):
        if stream and not answer.done and answer.text != shown:
            sys.stdout.write(answer.text[len(shown) :])
            sys.stdout.flush()
            shown = answer.text
    if args.json:
        print(json.dumps(answer.to_json(), ensure_ascii=False, indent=2))
        return 0
    if not stream:
        print(answer.text)
    elif answer.text != shown:
        # The finished answer has its citations checked; show it when that changed the text.
        print("\n\n" + answer.text if shown else answer.text)
    else:
        print()
    for n in answer.cited or range(1, len(answer.passages) + 1):
        hit = answer.passages[n - 1]
        print(f"[{n}] {hit.doc}" + (f", page {hit.page}" if hit.page else ""))
    print(outcome_line(answer), file=sys.stderr)
    return 0


def _style_argument(parser) -> None:
    from assistant.styles import DEFAULT_STYLE, STYLES

    parser.add_argument(
        "--style",
        choices=STYLES,
        default=DEFAULT_STYLE,
        help="quote: the documents' sentences, cited; concise: a short answer the model writes, "
        "checked against the documents; detailed: a longer checked answer",
    )


def outcome_line(answer) -> str:
    """Confidence, who answered and whether a person should check it, in one line."""
    from assistant.confidence import label

    parts = []
    if answer.confidence is not None:
        parts.append(f"confidence {answer.confidence:.2f} ({label(answer.confidence)})")
    parts.append(f"answered by {answer.model}")
    if answer.escalated:
        parts.append(f"escalated from {answer.first_model}")
    if answer.needs_review:
        parts.append("NEEDS REVIEW")
    if answer.sub_questions:
        parts.append(f"split into {len(answer.sub_questions)} sub-questions")
    line = " · ".join(parts)
    return line + (f"\n{answer.notice}" if answer.notice else "")


def _cmd_draft(app, args) -> int:
    from assistant.answer import strip_citations
    from assistant.draft import DraftConfig

    message = args.message.read_text("utf-8") if args.message else sys.stdin.read()
    config = DraftConfig(
        tone=args.tone,
        signature=args.signature or "",
        template=args.template.read_text("utf-8") if args.template else "",
        top_k=args.top_k,
        decompose=not args.no_decompose,
        style=args.style,
    )
    print("Loading the model…", file=sys.stderr)
    model = app.model_config(args.adapter)
    answer = deque(app.draft(args.kb, message, config, model=model), maxlen=1)[0]
    if args.json:
        print(json.dumps(answer.to_json(), ensure_ascii=False, indent=2))
        return 0
    print(strip_citations(answer.text) if args.no_citations else answer.text)
    if not args.no_citations:
        print()
        for n in answer.cited:
            hit = answer.passages[n - 1]
            print(f"[{n}] {hit.doc}" + (f", page {hit.page}" if hit.page else ""))
    print(outcome_line(answer), file=sys.stderr)
    print(f"draft {answer.draft_id} stored as pending", file=sys.stderr)
    return 0


def _cmd_serve(app, args) -> int:
    from assistant.server import run_server

    host = args.host or app.settings.host
    if not app.settings.api_keys and not _keys(app).configured():
        print(
            "warning: no API keys yet; every request will be refused until you run "
            "`python -m assistant keys --create NAME`.",
            file=sys.stderr,
        )
    run_server(app, host, args.port, ui=args.ui)
    return 0


def _keys(app):
    from assistant.api_keys import ApiKeyStore

    return ApiKeyStore(app.settings.data_dir, app.settings.api_keys)


def _read_password(args) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise ConfigError("The two passwords differ; nothing was changed.")
    return first


def _cmd_users(app, args) -> int:
    from assistant.auth import UserStore

    users = UserStore(app.settings.data_dir)
    if args.add:
        users.add(args.add, _read_password(args), args.role)
        print(
            f"User {args.add!r} ({args.role}) created; from its next start the web app asks everyone to log in.",
            file=sys.stderr,
        )
    elif args.passwd:
        users.set_password(args.passwd, _read_password(args))
        print(f"Password of {args.passwd!r} changed.", file=sys.stderr)
    elif args.delete:
        users.delete(args.delete)
        print(f"User {args.delete!r} deleted.", file=sys.stderr)
    else:
        for record in users.list():
            print(f"{record['name']}  {record['role']:6} created {record['created']}")
    return 0


def _cmd_keys(app, args) -> int:
    keys = _keys(app)
    if args.create:
        key = keys.create(args.create, args.role)
        print(key)
        print(f"Key {args.create!r} ({args.role}) created; it is shown only now.", file=sys.stderr)
        return 0
    if args.revoke:
        keys.revoke(args.revoke)
        print(f"Key {args.revoke!r} revoked.", file=sys.stderr)
        return 0
    for record in keys.list():
        print(f"{record['name']}  {record['role']:6} created {record['created']}")
    return 0


def follow_job(app, job, quiet: bool = False):
    """Show a job's progress until it ends; Ctrl-C cancels it. Returns the finished job."""
    printer = None if quiet else ProgressPrinter()
    offset = 0
    try:
        while True:
            events, offset = app.jobs.events(job.id, offset)
            for event in events:
                if event["type"] == "progress" and printer:
                    printer.show(Progress(**{k: v for k, v in event.items() if k not in ("t", "type")}))
            job = app.jobs.get(job.id)
            if not job.active:
                events, offset = app.jobs.events(job.id, offset)
                return job
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\ncancelling…", file=sys.stderr)
        app.jobs.cancel(job.id)
        return app.jobs.wait(job.id, timeout=60)
    finally:
        if printer:
            printer.close()


def _cmd_tune(app, args) -> int:
    from assistant.tune import TuneConfig

    config = TuneConfig.from_preset(
        args.preset,
        quant=args.quant,
        device=args.device,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        rank=args.rank,
        alpha=args.rank * 2 if args.rank else None,
        max_length=args.max_length,
        batch_size=args.batch_size,
    )
    if args.data:
        data = {
            "kind": "file",
            "path": str(args.data),
            "name": args.data.name,
            "question_column": args.question_column,
            "answer_column": args.answer_column,
        }
    elif args.drafts is not None:
        data = {"kind": "drafts", "kb": args.drafts or None}
    else:
        data = {"kind": "kb", "kb": args.kb}
    job = app.start_tune(args.name, data, config, base=args.base)
    print(f"job {job.id}: training adapter {args.name!r}; log in {job.folder / 'log.txt'}", file=sys.stderr)
    if args.detach:
        print(job.id)
        return 0
    job = follow_job(app, job, args.quiet)
    if job.state != "done":
        print(f"error: {job.error or job.state}", file=sys.stderr)
        return 130 if job.state == "cancelled" else 1
    info = app.adapters.get(job.result["adapter"])
    m = info.card["metrics"]
    if args.json:
        print(json.dumps(info.card, ensure_ascii=False, indent=2))
        return 0
    print(
        f"Saved adapter {info.name!r}: validation loss {m['val_loss_before']:.3f} → {m['val_loss_after']:.3f}, "
        f"perplexity {m['perplexity_before']:.1f} → {m['perplexity_after']:.1f}, "
        f"{m['tokens_per_s']:.0f} tokens/s, {info.card['duration_s']:.0f} s."
    )
    comparison = json.loads((info.path / "comparison.json").read_text(encoding="utf-8"))
    for row in comparison:
        print(
            f"\nQ: {row['question']}\n  expected: {row['expected']}\n  base:     {row['base']}\n  tuned:    {row['tuned']}"
        )
    return 0


def _cmd_export(app, args) -> int:
    out = app.export_adapter(args.adapter, args.out, merge=args.merge)
    what = "merged model folder" if args.merge else "adapter zip"
    print(f"Wrote the {what} to {out}.")
    return 0


def _cmd_adapters(app, args) -> int:
    if args.delete:
        app.delete_adapter(args.delete)
        print(f"Deleted adapter {args.delete!r}.")
        return 0
    if args.rename:
        app.rename_adapter(*args.rename)
        print(f"Renamed adapter {args.rename[0]!r} to {args.rename[1]!r}.")
        return 0
    adapters = app.adapters.list()
    if args.json:
        print(json.dumps([{"name": a.name, **a.card} for a in adapters], ensure_ascii=False, indent=2))
    for a in [] if args.json else adapters:
        print(f"{a.name}: {a.summary()}")
    return 0


def format_metric(key: str, value) -> str:
    if value is None:
        return "n/a"
    if key.endswith("_s"):
        return f"{value:.2f}"
    return f"{value:.3f}"


def _cmd_eval(app, args) -> int:
    from dataclasses import replace

    from assistant.evaluation import EvalConfig, load_eval_set
    from assistant.metrics import METRIC_HELP, METRIC_LABEL

    if args.set.exists():
        evalset = load_eval_set(args.set)
        app.eval_sets(args.kb).save(evalset)  # kept with the knowledge base, to run again later
    else:
        evalset = app.eval_sets(args.kb).get(str(args.set))
    if args.limit:
        evalset = replace(evalset, items=evalset.items[: args.limit])
    config = EvalConfig(
        kb=args.kb,
        adapter=args.adapter or "",
        top_k=args.top_k,
        retrieval=not args.no_retrieval,
        max_new_tokens=args.max_new_tokens,
        decompose=not args.no_decompose,
        escalate=args.escalate,
        style=args.style,
    )
    run = drive(app.evaluate(evalset, config), None if args.quiet else ProgressPrinter())
    if args.json:
        print(
            json.dumps(
                run.to_json() if args.details else {**run.to_json(), "results": None},
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    m = run.metrics
    print(f"Run {run.id}: {evalset.name} ({m['answerable']} answerable, {m['unanswerable']} unanswerable) "
          f"with {run.model}, {config.label()}")  # fmt: skip
    for key, label in METRIC_LABEL.items():
        print(f"  {label:22} {format_metric(key, m[key]):>7}   {METRIC_HELP[key]}")
    return 0


def _cmd_jobs(app, args) -> int:
    if args.cancel:
        job = app.jobs.cancel(args.cancel)
        print(f"job {job.id}: {'cancelling' if job.active else 'already ' + job.state}")
        return 0
    jobs = app.jobs.list()
    if args.json:
        print(
            json.dumps([{**j.__dict__, "folder": str(j.folder)} for j in jobs], ensure_ascii=False, indent=2)
        )
    for j in [] if args.json else jobs:
        p = j.progress
        where = f" · {p['stage']} {p['done']:g}/{p['total']:g} {p['unit']}" if p and j.active else ""
        print(
            f"{j.id}  {j.kind:5} {j.state:11} {j.request.get('name', '')}{where}{'  ' + j.error if j.error else ''}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m assistant", description="Tsumugi from the command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="add files and folders (recursively) to a knowledge base")
    p.add_argument("--kb", required=True, help="knowledge base (created if missing)")
    p.add_argument("--json", action="store_true", help="print per-file results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument(
        "--chunk-size", type=int, help="tokens per passage when the knowledge base is created (default 200)"
    )
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("list", help="list knowledge bases, or the documents of one")
    p.add_argument("--kb")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("reembed", help="switch a knowledge base to another embedding model")
    p.add_argument("--kb", required=True)
    p.add_argument("--model", required=True, help="model folder, cached hub id, or all-MiniLM-L6-v2")
    p.set_defaults(func=_cmd_reembed)

    def retrieval_args(p):
        p.add_argument("--top-k", type=int, default=5)
        p.add_argument("--mode", choices=["hybrid", "dense", "lexical"], default="hybrid")

    p = sub.add_parser("search", help="show the passages retrieved for a query")
    p.add_argument("--kb", required=True)
    p.add_argument("--json", action="store_true", help="print a JSON list of hits")
    retrieval_args(p)
    p.add_argument("--cutoff", action="store_true", help="drop passages below the relevance cut-off")
    p.add_argument("query")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("ask", help="answer a question from a knowledge base, with citations")
    p.add_argument("--kb", required=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    retrieval_args(p)
    p.add_argument(
        "--no-cutoff", action="store_true", help="answer from passages below the relevance cut-off too"
    )
    p.add_argument("--adapter", help="answer with this tuned adapter")
    _style_argument(p)
    p.add_argument("question")
    p.set_defaults(func=_cmd_ask)

    p = sub.add_parser("tune", help="LoRA-tune the chat model on question/answer pairs or a knowledge base")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="CSV, TSV, XLSX or JSONL of question/answer pairs")
    source.add_argument("--kb", help="continue pre-training on this knowledge base's documents")
    source.add_argument(
        "--drafts", nargs="?", const="", metavar="KB", help="train on accepted reply drafts (of KB, or all)"
    )
    p.add_argument("--name", required=True, help="name of the adapter to create")
    p.add_argument("--base", help="base model (default: the configured chat model)")
    p.add_argument("--preset", choices=["quick", "balanced", "thorough"], default="quick")
    p.add_argument("--quant", choices=["4bit", "8bit", "none"], default="4bit")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--epochs", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--rank", type=int)
    p.add_argument("--max-length", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--question-column")
    p.add_argument("--answer-column")
    p.add_argument("--json", action="store_true", help="print the adapter card as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--detach", action="store_true", help="start the job, print its id and return")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("export", help="export an adapter as a zip, or merged into a standalone model folder")
    p.add_argument("--adapter", required=True)
    p.add_argument("--merge", action="store_true", help="merge into the base model and save a folder")
    p.add_argument("--out", required=True, type=Path, help="folder to write to")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("eval", help="measure answer quality on a set of questions with expected answers")
    p.add_argument("--kb", required=True)
    p.add_argument("--set", required=True, type=Path, help="CSV/XLSX/JSONL file, or the name of a stored set")
    p.add_argument("--adapter", help="answer with this tuned adapter")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--no-retrieval", action="store_true", help="answer from the model alone (closed book)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--limit", type=int, help="only the first N questions")
    p.add_argument("--no-decompose", action="store_true", help="one retrieval per question, never split")
    p.add_argument("--escalate", action="store_true", help="send low-confidence answers to the larger model")
    _style_argument(p)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--details", action="store_true", help="with --json: every question's answer and scores")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("draft", help="draft a reply to a customer message (read from stdin or --message)")
    p.add_argument("--kb", required=True)
    p.add_argument("--tone", choices=["formal", "friendly", "concise"], default="formal")
    p.add_argument("--signature", help="text under the reply (name, team)")
    p.add_argument("--template", type=Path, help="file with a reply template containing {reply}")
    p.add_argument("--message", type=Path, help="file with the customer's message (default: stdin)")
    p.add_argument("--adapter", help="draft with this tuned adapter")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--no-decompose", action="store_true", help="one retrieval for the whole message")
    p.add_argument("--no-citations", action="store_true", help="print the reply without [n] marks")
    _style_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_draft)

    p = sub.add_parser("serve", help="serve the OpenAI-compatible API (and with --ui the web app)")
    p.add_argument("--host", help="address to listen on (default TSUMUGI_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--ui", action="store_true", help="serve the web app at / as well")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("users", help="list, add or delete users of the web app (login and roles)")
    p.add_argument("--add", metavar="NAME")
    p.add_argument("--role", choices=["agent", "admin"], default="agent")
    p.add_argument("--passwd", metavar="NAME", help="change a user's password")
    p.add_argument("--delete", metavar="NAME")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin (scripts)")
    p.set_defaults(func=_cmd_users)

    p = sub.add_parser("keys", help="list, create or revoke API keys")
    p.add_argument("--create", metavar="NAME")
    p.add_argument("--role", choices=["agent", "admin"], default="agent")
    p.add_argument("--revoke", metavar="NAME")
    p.set_defaults(func=_cmd_keys)

    p = sub.add_parser("jobs", help="list background jobs (training, evaluation), or cancel one")
    p.add_argument("--json", action="store_true")
    p.add_argument("--cancel", metavar="JOB_ID")
    p.set_defaults(func=_cmd_jobs)

    p = sub.add_parser("adapters", help="list, rename or delete tuned adapters")
    p.add_argument("--json", action="store_true")
    p.add_argument("--delete", metavar="NAME")
    p.add_argument("--rename", nargs=2, metavar=("OLD", "NEW"))
    p.set_defaults(func=_cmd_adapters)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from assistant.service import Tsumugi

        return args.func(Tsumugi(), args)
    except TsumugiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
