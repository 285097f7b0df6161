"""Knowledge tab: choose or create a knowledge base, upload files, list and delete documents."""

from __future__ import annotations

from itertools import islice

import gradio as gr

from assistant.ui.common import CancelFlag, arm_cancel, handler, refuse_untyped, shown_progress, upload_path
from assistant.ui.locale import (
    choices,
    inform,
    progress_text,
    reader_japanese,
    t,
    table,
    told,
    translated,
    warn,
)
from knowledge.embed import reads
from knowledge.errors import TsumugiError
from knowledge.ingest import Source
from knowledge.progress import Relay, drive_events, on_one_thread

STATUS_LABEL = {
    "waiting": "⏳ waiting",
    "added": "✅ added",
    "updated": "🔄 updated",
    "unchanged": "➖ already there",
    "failed": "❌ failed",
    "cancelled": "⏹ cancelled",
    "skipped": "⏭ skipped",
}


RESULT_HEADERS = ["File", "Result", "Chunks", "Details"]
DOCUMENT_HEADERS = ["Document", "Type", "Pages", "Chunks", "Added (UTC)"]


def _documents_table(app, kb_name: str | None) -> dict:
    rows = []
    if kb_name and app.library.exists(kb_name):
        rows = [
            [d.name, d.kind, d.pages or "", d.chunks, d.added_at.replace("T", " ")[:16]]
            for d in app.library.get(kb_name).documents()
        ]
    return table(DOCUMENT_HEADERS, rows)


def _doc_choices(app, kb_name: str | None) -> list[tuple[str, int]]:
    if not kb_name or not app.library.exists(kb_name):
        return []
    return [(d.name, d.id) for d in app.library.get(kb_name).documents()]


def describe(app, kb_name):
    if not kb_name or not app.library.exists(kb_name):
        return translated("Create a knowledge base to start.")
    kb = app.library.get(kb_name)
    documents = kb.documents()
    lines = [
        told(
            "**{name}** · {documents} documents · {chunks} chunks · passages of up to {size} tokens · "
            "embedding model `{model}`",
            name=kb_name,
            documents=len(documents),
            chunks=sum(d.chunks for d in documents),
            size=kb.chunking.size,
            model=kb.embed_model,
        )
    ]
    sample = " ".join(text for _, _, text in islice(kb.iter_chunk_texts(), 20)) if documents else ""
    if not reads(kb.embed_model, sample):
        lines.append(
            translated(
                "_Some of these documents are Japanese, which this embedding model does not read: "
                "search matches their words, not their meaning. Re-embedding with a multilingual model "
                "(Knowledge base settings, below) adds search by meaning._"
            )
        )
    return "\n\n".join(lines)


def refresh(app, kb_name):
    model = app.library.get(kb_name).embed_model if kb_name and app.library.exists(kb_name) else ""
    return (
        describe(app, kb_name),
        _documents_table(app, kb_name),
        gr.update(choices=_doc_choices(app, kb_name), value=None),
        model,
    )


def create(app, name, size=200):
    try:
        if app.library.exists((name or "").strip()):
            raise TsumugiError(f"A knowledge base called {name.strip()!r} already exists.")
        kb = app.knowledge_base(name, create=True, chunk_size=int(size or 224))
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    inform("Created the knowledge base {name}.", name=kb.name)
    return gr.update(choices=app.library.names(), value=kb.name), ""


def cancel_upload(app, flag: CancelFlag | None) -> None:
    """Ask this session's upload to stop after the file it is on."""
    if flag is None or not flag.armed:
        inform("No upload is running.")
        return
    flag.set()
    inform("Cancelling: the upload stops after the file it is on; files already added stay.")


def outcome(results, japanese: bool = False) -> str:
    """One line on how an upload ended: counts, and where a cancel stopped it."""
    counts = {s: sum(r.status == s for r in results) for s in STATUS_LABEL if s != "waiting"}
    if counts["cancelled"]:
        done = len(results) - counts["cancelled"]
        return translated(
            f"Cancelled after {done} of {len(results)} files; {counts['added']} added.", japanese
        )
    told = [
        translated(f"{n} {s if s != 'unchanged' else 'already there'}", japanese)
        for s, n in counts.items()
        if n
    ]
    if not told:
        return translated("No files.", japanese)
    return "、".join(told) + "。" if japanese else ", ".join(told).capitalize() + "."


def add_ready(app, kb_name, uploaded) -> None:
    """At the click, before the upload: refused inside the upload's event, Gradio also marked
    the upload table, the summary and the document list "Error"."""
    if not kb_name:
        raise gr.Error("Choose or create a knowledge base first.")
    if not uploaded:
        raise gr.Error("Choose one or more files to upload first.")


def add(app, kb_name, uploaded, flag=None, progress=gr.Progress()):
    """Upload with progress; the last update empties the drop zone of the files now in the
    knowledge base (left there, they read as not yet added), keeping those a cancel left out."""
    flag = flag if flag is not None else CancelFlag()
    flag.armed = True  # already, when the click armed it; a Cancel since then is kept
    try:
        add_ready(app, kb_name, uploaded)
        yield from _ingest_uploads(app, kb_name, uploaded, flag, progress)
    finally:
        flag.armed = False
        flag.clear()


def _ingest_uploads(app, kb_name, uploaded, flag, progress):
    paths = [upload_path(f) for f in uploaded]
    # Gradio keeps uploads under a temporary name; the user knows the original one.
    sources = [Source(p, p.name) for p in paths]
    rows = [[s.name, translated(STATUS_LABEL["waiting"]), "", ""] for s in sources]
    where: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        where.setdefault(s.name, []).append(i)
    # Its steps run on one thread, whichever of Gradio's threads asks for them (on_one_thread).
    work = on_one_thread(app.ingest(kb_name, sources, flag))
    relay = Relay(work)
    yield table(RESULT_HEADERS, rows), gr.update(), gr.update(), gr.update(), gr.update()
    try:  # closed here when the browser goes away, not left to the garbage collector
        for event in relay:
            if event.stage in ("Reading", "Embedding"):
                for name in event.items:
                    for i in where.get(name, ()):
                        doing = "⚙️ reading" if event.stage == "Reading" else f"⚙️ {translated(event.message)}"
                        rows[i][1] = translated(doing)
            progress(event.fraction, desc=progress_text(event))
            yield table(RESULT_HEADERS, rows), gr.update(), gr.update(), gr.update(), gr.update()
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    finally:
        work.close()
    results = relay.result or []
    for i, result in enumerate(results):
        rows[i] = [
            result.name,
            translated(STATUS_LABEL[result.status]),
            result.chunks or "",
            translated(result.message),
        ]
    told = outcome(results, reader_japanese())
    (warn if any(r.status == "cancelled" for r in results) else inform)(told)
    described, documents, choices, _ = refresh(app, kb_name)
    # The drop zone keeps only what a cancel left out, to add again; the rest is in.
    left = [str(paths[i]) for i, r in enumerate(results) if r.status == "cancelled"]
    yield table(RESULT_HEADERS, rows), f"{told}\n\n{described}", documents, choices, left or None


def delete(app, kb_name, doc_id):
    if not kb_name or doc_id is None:
        raise gr.Error("Choose a document to delete first.")
    try:
        app.library.get(kb_name).delete_document(int(doc_id))
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    inform("Deleted the document and its passages.")
    return refresh(app, kb_name)[:3]


def change_model(app, kb_name, model, progress=gr.Progress()):
    from knowledge.ingest import reembed

    if not kb_name or not (model or "").strip():
        raise gr.Error("Choose a knowledge base and type an embedding model first.")
    try:
        count = drive_events(reembed(app.library.get(kb_name), model.strip()), shown_progress(progress))
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    inform("Re-embedded {n} passages with {model}.", n=count, model=model.strip())
    return describe(app, kb_name)


def delete_kb_typed(app, kb_name, typed):
    """At the click, before the delete's event (whose outputs a refusal would mark "Error"):
    a knowledge base is deleted only once its name is typed."""
    refuse_untyped(kb_name, typed, "Type the exact name of the selected knowledge base to delete it.")


def delete_kb(app, kb_name, typed):
    delete_kb_typed(app, kb_name, typed)
    try:
        app.library.delete(kb_name)
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    inform("Deleted the knowledge base {name}.", name=kb_name)
    names = app.library.names()
    return gr.update(choices=names, value=names[0] if names else None), ""


def build(app, demo: gr.Blocks, kb_selector: gr.Dropdown) -> None:
    with gr.Row():
        new_name = gr.Textbox(label=t("New knowledge base"), placeholder=t("e.g. support-manuals"), scale=3)
        chunk_size = gr.Dropdown(
            choices([("Short passages (112 tokens)", 112), ("Standard (224 tokens)", 224)]),
            value=224,
            label=t("Passage size"),
            info=t("Compare sizes in the Evaluate tab with two knowledge bases."),
            scale=2,
        )
        create_btn = gr.Button(t("Create"), scale=1)
    summary = gr.Markdown()
    files = gr.File(label=t("Documents (PDF, DOCX, XLSX, HTML, Markdown, text, CSV)"), file_count="multiple")
    with gr.Row():
        add_btn = gr.Button(t("Add to knowledge base"), variant="primary")
        cancel_btn = gr.Button(t("Cancel"), variant="stop")
    results = gr.Dataframe(
        headers=RESULT_HEADERS,
        label=t("Upload results"),
        interactive=False,
        wrap=True,
    )
    docs = gr.Dataframe(
        headers=DOCUMENT_HEADERS,
        label=t("Documents"),
        interactive=False,
        wrap=True,
    )
    with gr.Row():
        doc_pick = gr.Dropdown(label=t("Document to delete"), choices=[], scale=3)
        delete_btn = gr.Button(t("Delete document"), variant="stop", scale=1)
    with gr.Accordion(t("Knowledge base settings"), open=False):
        with gr.Row():
            embed_model = gr.Textbox(
                label=t("Embedding model (a local folder, or all-MiniLM-L6-v2)"),
                scale=3,
                info=t("Changing it re-embeds every passage; the old vectors stay in use until it finishes."),
            )
            reembed_btn = gr.Button(t("Re-embed with this model"), scale=1)
        with gr.Row():
            confirm_name = gr.Textbox(label=t("Type the knowledge base's name to delete it"), scale=3)
            delete_kb_btn = gr.Button(t("Delete knowledge base"), variant="stop", scale=1)

    create_btn.click(handler(create, app), [new_name, chunk_size], [kb_selector, new_name])
    cancel_flag = gr.State(CancelFlag())
    # Armed at the click, unqueued, so a Cancel counts while the upload waits its turn; the
    # check runs queued (a refusal from an unqueued event shows no toast).
    add_btn.click(handler(arm_cancel, app), [cancel_flag], None, queue=False).then(
        handler(add_ready, app), [kb_selector, files], None
    ).success(
        handler(add, app),
        [kb_selector, files, cancel_flag],
        [results, summary, docs, doc_pick, files],
        show_progress_on=[results],  # one bar, over the file table (not a copy on each output)
    )
    # Cancel asks the upload to stop between files, so it can say what it did and what it left.
    cancel_btn.click(handler(cancel_upload, app), [cancel_flag], None, queue=False)
    delete_btn.click(handler(delete, app), [kb_selector, doc_pick], [summary, docs, doc_pick])
    reembed_btn.click(handler(change_model, app), [kb_selector, embed_model], [summary])
    delete_kb_btn.click(handler(delete_kb_typed, app), [kb_selector, confirm_name], None).success(
        handler(delete_kb, app), [kb_selector, confirm_name], [kb_selector, confirm_name]
    )
    kb_selector.change(handler(refresh, app), [kb_selector], [summary, docs, doc_pick, embed_model])
    # On load too: when the page's knowledge base is already the one chosen, nothing changes,
    # and the tab showed no documents and no summary until another base was picked.
    demo.load(handler(refresh, app), [kb_selector], [summary, docs, doc_pick, embed_model])
