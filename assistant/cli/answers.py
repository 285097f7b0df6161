"""Commands on knowledge bases and answers: ingest, list, reembed, search, ask, draft."""

from __future__ import annotations

import json
import sys
from collections import deque
from pathlib import Path

from assistant.cli.common import (
    ProgressPrinter,
    drive,
    outcome_line,
    retrieval_config,
)


def _cmd_ingest(app, args) -> int:
    """Folders of any size in one command: files go in batches of at most TSUMUGI_MAX_FILES
    (the limit of one web upload), with progress over them all and one summary at the end. A
    knowledge base this command created and left empty is removed again."""
    from knowledge.errors import TsumugiError
    from knowledge.ingest import ingest_in_batches, scan_sources
    from knowledge.library import check_name

    kb_name = check_name(args.kb)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        raise TsumugiError(f"{missing[0]} does not exist; check the path and run the command again.")
    sources, skipped = scan_sources(args.paths)
    existed = app.library.exists(kb_name)
    results = []
    try:
        if sources:
            results = drive(
                ingest_in_batches(
                    lambda batch: app.ingest(kb_name, batch, chunk_size=args.chunk_size),
                    sources,
                    app.settings.limits.max_files,
                ),
                None if args.quiet else ProgressPrinter(),
            )
    finally:
        if not existed and app.library.exists(kb_name) and not app.library.get(kb_name).documents():
            app.library.delete(kb_name)
    results += skipped
    if args.json:
        print(json.dumps([r.__dict__ for r in results], ensure_ascii=False, indent=2))
    else:
        for r in results:
            print(f"{r.status:9} {r.name}: {r.message}")
        statuses = ("added", "updated", "unchanged", "failed", "cancelled", "skipped")
        counts = {s: sum(r.status == s for r in results) for s in statuses}
        print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no files", file=sys.stderr)
    stored = any(r.status in ("added", "updated", "unchanged") for r in results)
    return 0 if stored or not results else 1


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


def _cmd_search(app, args) -> int:
    # A search shows the ranking; each hit says whether it passed the relevance cut-off,
    # and --cutoff drops those that did not (as answering does).
    hits = app.search(args.kb, args.query, retrieval_config(args, cutoff=args.cutoff))
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
    from assistant.answering.answer import AnswerConfig

    config = AnswerConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        retrieval=retrieval_config(args, cutoff=not args.no_cutoff),
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


def _cmd_draft(app, args) -> int:
    from assistant.drafting.compose import DraftConfig
    from knowledge.text import strip_citations

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
