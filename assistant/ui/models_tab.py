"""Models tab (admins): the chat and embedding models Tsumugi can use, with what each needs in
memory; choose the chat model and the embedder for new knowledge bases; download from the hub."""

from __future__ import annotations

import html

import gradio as gr

from assistant.generation.catalog import free_memory_mb
from assistant.ui.common import CancelFlag, StopSignal, arm_cancel, handler, shown_progress, stop_now
from assistant.ui.locale import inform, t
from knowledge.errors import TsumugiError
from knowledge.progress import drive_events

HEADERS = ["in use", "kind", "model", "from", "parameters", "on disk", "memory needed", "fits"]


def _gb(mb: float) -> str:
    return f"{mb / 1024:.1f} GB"


def _summary(app) -> str:
    model = app.settings.model
    device, precision = model.resolved_device(), model.resolved_precision()
    free = free_memory_mb(device, app.settings.free_memory_mb)
    where = "GPU memory" if device == "cuda" else "memory"
    limit = " (TSUMUGI_FREE_MEMORY_MB)" if app.settings.free_memory_mb else ""
    remote = app.settings.chat
    lines = [
        f"**Chat model**: `{html.escape(model.name)}` in {precision} on {device}"
        + (
            f" · generation goes to `{html.escape(remote.model)}` at {html.escape(remote.base_url)}"
            if remote
            else ""
        ),
        f"**Embedding model for new knowledge bases**: `{html.escape(app.settings.embed_model)}`",
        f"**Free {where}**: {_gb(free)}{limit} · downloads {'allowed' if app.settings.allow_downloads else 'off (TSUMUGI_ALLOW_DOWNLOADS)'}",
    ]
    return "  \n".join(lines)


def list_models(app):
    """The catalogue as a table, and the chat and embedding choices."""
    model = app.settings.model
    precision = model.resolved_precision()
    free = free_memory_mb(model.resolved_device(), app.settings.free_memory_mb)
    chosen = {model.name, app.settings.embed_model}
    rows, chat, embed = [], [], []
    for e in app.models():
        wanted = precision if e.kind == "chat" else "fp32"
        need = " · ".join(f"{p} {_gb(mb)}" for p, mb in e.memory_mb.items())
        fits = "yes" if e.memory_mb[wanted] <= free else f"no, in {wanted}"
        rows.append(["●" if e.name in chosen else "", e.kind, e.name, e.source, f"{e.parameters / 1e6:,.0f} M", f"{e.size_mb:,.0f} MB", need, fits])  # fmt: skip
        (chat if e.kind == "chat" else embed).append(e.name)
    return (
        _summary(app),
        gr.update(value=rows, headers=HEADERS),
        gr.update(choices=chat, value=model.name),
        gr.update(choices=embed, value=app.settings.embed_model),
    )


def use_chat_model(app, name):
    return _use(
        app, app.set_chat_model, name, "Answering with {name} from now on; it loads on the next question."
    )


def use_embed_model(app, name):
    message = "New knowledge bases will be embedded with {name}; existing ones keep theirs."
    return _use(app, app.set_embed_model, name, message)


def _use(app, setter, name, message: str):
    try:
        entry = setter(name or "")
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    inform(message, name=entry.name)
    return list_models(app)


def pull_model(app, repo_id, flag=None, progress=gr.Progress()):
    """Download a hub model, with progress; Cancel stops it within a chunk."""
    if not (repo_id or "").strip():
        raise gr.Error("Type a hub model id, e.g. HuggingFaceTB/SmolLM2-360M-Instruct.")
    stop = StopSignal(flag)
    try:
        folder = drive_events(app.pull_model(repo_id, stop), shown_progress(progress))
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    finally:
        stop.finish()
    return (f"Downloaded `{html.escape(repo_id.strip())}` into `{html.escape(folder)}`.", *list_models(app))


def build(app, demo: gr.Blocks, kb_selector: gr.Dropdown) -> None:
    summary = gr.Markdown()
    table = gr.Dataframe(
        headers=HEADERS,
        label=t("Models"),
        interactive=False,
        wrap=True,
        column_widths=["6%", "9%", "25%", "9%", "9%", "8%", "24%", "10%"],
    )
    with gr.Row():
        chat_pick = gr.Dropdown(label=t("Chat model"), choices=[], allow_custom_value=True, scale=3)
        chat_btn = gr.Button(t("Answer with this model"), variant="primary", scale=1)
    with gr.Row():
        embed_pick = gr.Dropdown(label=t("Embedding model"), choices=[], allow_custom_value=True, scale=3)
        embed_btn = gr.Button(t("Use for new knowledge bases"), scale=1)
    gr.Markdown(
        t(
            "<sub>Memory needed is an estimate: parameters × bytes per parameter × 1.2 + 300 MB. A model "
            "that does not fit at the chosen precision is refused before it loads. Folders are listed "
            "from the models directory (TSUMUGI_MODELS_DIR) and merged adapter exports.</sub>"
        )
    )
    with gr.Accordion(t("Download a model from the Hugging Face Hub"), open=False):
        with gr.Row():
            repo = gr.Textbox(
                label=t("Hub model id"), placeholder="HuggingFaceTB/SmolLM2-360M-Instruct", scale=3
            )
            pull_btn = gr.Button(t("Download"), scale=1)
            cancel_btn = gr.Button(t("Cancel"), variant="stop", scale=1)
        pulled = gr.Markdown()
    refresh_btn = gr.Button(t("Refresh"), size="sm")

    outputs = [summary, table, chat_pick, embed_pick]
    demo.load(handler(list_models, app), None, outputs)
    refresh_btn.click(handler(list_models, app), None, outputs)
    chat_btn.click(handler(use_chat_model, app), [chat_pick], outputs)
    embed_btn.click(handler(use_embed_model, app), [embed_pick], outputs)
    flag = gr.State(CancelFlag())
    event = pull_btn.click(handler(arm_cancel, app), [flag], None, queue=False).then(
        handler(pull_model, app), [repo, flag], [pulled, *outputs]
    )
    cancel_btn.click(handler(stop_now, app), [flag], None, queue=False, cancels=[event])
