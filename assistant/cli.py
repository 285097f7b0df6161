"""Command line: ``python -m assistant <command>``. Progress on stderr, results on stdout."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Generator
from typing import TypeVar

from knowledge.errors import TsumugiError
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
    results = drive(app.ingest(args.kb, args.paths), None if args.quiet else ProgressPrinter())
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
    )
    print("Loading the model…", file=sys.stderr)
    app.chat_model()
    stream = sys.stdout.isatty() and not args.json
    answer = None
    shown = ""
    for answer in app.ask(args.kb, args.question, config=config):
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
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m assistant", description="Tsumugi from the command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="add files and folders (recursively) to a knowledge base")
    p.add_argument("--kb", required=True, help="knowledge base (created if missing)")
    p.add_argument("--json", action="store_true", help="print per-file results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
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
    p.add_argument("question")
    p.set_defaults(func=_cmd_ask)
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
