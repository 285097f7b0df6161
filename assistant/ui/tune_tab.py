"""Tune tab: check training data, start a LoRA/QLoRA job, follow it, compare and manage adapters."""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from assistant.records import RECORD_EXTENSIONS, read_table
from assistant.tuning.data import TrainingData
from assistant.tuning.job import data_source, load_training_data
from assistant.tuning.train import PRESET_HELP, PRESETS, TuneConfig
from assistant.ui.adapters_panel import (
    COMPARISON_HEADERS,
    adapter_card,
    adapter_details,
    adapter_names,
    delete_adapter,
    delete_typed,
    download_adapter,
    refresh_adapters,
    rename_adapter,
    rename_ready,
    save_merged_model,
)
from assistant.ui.common import (
    EXPORT_FORMATS,
    KB_FIRST,
    export_file,
    handler,
    job_progress_html,
    upload_path,
)
from assistant.ui.locale import choices, inform, t
from knowledge.errors import TsumugiError

FILE_SOURCE = "Question/answer file"
KB_SOURCE = "The knowledge base's documents"
DRAFTS_SOURCE = "Accepted reply drafts"
AUTO = "(recognise automatically)"
QUANT_CHOICES = [
    ("4-bit QLoRA: least memory (recommended)", "4bit"),
    ("8-bit: more memory, a little closer to the original", "8bit"),
    ("None: full precision, most memory", "none"),
]


def data_request(source, upload, kb_name, q_col, a_col) -> dict:
    """The training data the user chose, as a tuning request's ``data`` entry."""
    if source == KB_SOURCE and not kb_name:
        raise TsumugiError(KB_FIRST)
    kind = {DRAFTS_SOURCE: "drafts", KB_SOURCE: "kb"}.get(source, "file")
    columns = [None if c in (None, AUTO) else c for c in (q_col, a_col)]
    return data_source(kind, kb_name, upload_path(upload) if kind == "file" else None, *columns)


def report_markdown(data: TrainingData) -> str:
    r = data.report
    what = {"pairs": "question/answer pairs", "chat": "conversations", "documents": "passages"}[r.kind]
    lines = [f"**{r.usable} {what}** ready from {html.escape(r.source)} ({r.rows} rows read)."]
    if r.question_column:
        lines[0] += (
            f" Questions from **{html.escape(r.question_column)}**, answers from **{html.escape(r.answer_column)}**."
        )
    if r.kind != "documents" and r.usable >= 6:
        train, val = data.split()
        lines.append(f"{len(train)} train the adapter and {len(val)} are held out to measure it.")
    lines += [f"- ⚠️ {html.escape(w)}" for w in r.warnings()]
    return "\n\n".join(lines[:2]) + ("\n\n" + "\n".join(lines[2:]) if lines[2:] else "")


def loss_points(app, job_id: str, cache: dict) -> tuple[list[list], dict]:
    """Training and validation loss by step, read incrementally from the job's events."""
    if cache.get("job") != job_id:
        cache = {"job": job_id, "offset": 0, "points": []}
    events, cache["offset"] = app.jobs.events(job_id, cache["offset"])
    for e in events:
        if e.get("type") != "progress" or e.get("stage") != "training":
            continue
        m = e.get("metrics") or {}
        if "loss" in m:
            cache["points"].append([e["done"], m["loss"], "training"])
        if "val_loss" in m:
            cache["points"].append([e["done"], m["val_loss"], "validation"])
    return cache["points"], cache


def _plot_value(points: list[list]):
    import pandas as pd

    if len({p[2] for p in points}) < 2:
        # Gradio 6.31 fixes a chart's series at its first value: a series that appears later is
        # drawn invisibly. Wait until both training and validation points exist.
        return None
    frame = pd.DataFrame(points, columns=["step", "loss", "series"])
    return frame.astype({"step": "int64", "loss": "float64", "series": "object"})


def _job_choices(app) -> list[tuple[str, str]]:
    return [(j.title(), j.id) for j in app.jobs.list("tune", limit=30)]


def check_data(app, source_choice, uploaded, kb_name, q, a):
    try:
        request = {"data": data_request(source_choice, uploaded, kb_name, q, a)}
        data = load_training_data(request, None, Path(app.settings.data_dir), app.settings.limits)
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    cols = [AUTO, *data.report.columns]
    rows = data.report.preview
    headers = list(rows[0]) if rows else ["(empty)"]
    table = gr.update(value=[[r.get(h, "") for h in headers] for r in rows], headers=headers, visible=True)
    return (
        report_markdown(data),
        table,
        gr.update(choices=cols, value=data.report.question_column or AUTO),
        gr.update(choices=cols, value=data.report.answer_column or AUTO),
    )


def new_file(app, uploaded, kb_name):
    if not uploaded:
        return (
            "",
            gr.update(visible=False),
            gr.update(choices=[AUTO], value=AUTO),
            gr.update(choices=[AUTO], value=AUTO),
        )
    try:
        return check_data(app, FILE_SOURCE, uploaded, kb_name, AUTO, AUTO)
    except gr.Error as exc:
        # Unrecognised columns: list them so the user can choose.
        try:
            table = read_table(upload_path(uploaded), limits=app.settings.limits)
        except TsumugiError:
            raise exc from None
        cols = [AUTO, *table.columns]
        return (
            f"⚠️ {html.escape(exc.message)}",
            gr.update(visible=False),
            gr.update(choices=cols, value=AUTO),
            gr.update(choices=cols, value=AUTO),
        )


def export_drafts(app, kb_name, suffix):
    """The accepted drafts of the chosen base as a download, to version or to train elsewhere
    (admins only: the customers' messages of every agent)."""
    try:
        path = export_file(app, app.drafts.accepted_rows(kb_name or None), "accepted-drafts", suffix)
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    return gr.update(value=path, visible=True)


def apply_preset(choice):
    p = PRESETS[choice]
    return p["rank"], p["alpha"], p["learning_rate"], p["epochs"]


def start_tune(app, source_choice, uploaded, kb_name, q, a, adapter_name, preset_choice, quant_choice, base_name,
          r, al, dr, learning_rate, ep, ml, bs, ga, gc, tm):  # fmt: skip
    try:
        config = TuneConfig(
            preset=preset_choice,
            quant=quant_choice,
            rank=int(r),
            alpha=int(al),
            dropout=float(dr),
            learning_rate=float(learning_rate),
            epochs=int(ep),
            max_length=int(ml),
            batch_size=int(bs),
            grad_accum=int(ga),
            gradient_checkpointing=bool(gc),
            target_modules=tm or "all-linear",
        )
        data = data_request(source_choice, uploaded, kb_name, q, a)
        job = app.start_tune(adapter_name or "", data, config, base=(base_name or "").strip() or None)
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    inform("Started tuning {name}. You can leave this page; the job keeps running.", name=adapter_name)
    return gr.update(choices=_job_choices(app), value=job.id), {}


def tune_status(app, job_id, cache):
    if not job_id:
        return gr.update(), gr.update(), cache, gr.update(), gr.update()
    try:
        job = app.jobs.get(job_id)
    except TsumugiError:
        return job_progress_html(None, "No tuning job yet."), gr.update(), cache, gr.update(), gr.update()
    state_changed = cache.get("state") not in (None, job.state)
    finished_now = state_changed and not job.active
    points, cache = loss_points(app, job_id, cache)
    changed = len(points) != cache.get("shown")
    cache["shown"], cache["state"] = len(points), job.state
    adapters = (
        gr.update(choices=adapter_names(app), value=job.result.get("adapter"))
        if finished_now
        else gr.update()
    )
    jobs = gr.update(choices=_job_choices(app)) if state_changed else gr.update()
    return (
        job_progress_html(job),
        (_plot_value(points) if changed else gr.update()),
        cache,
        adapters,
        jobs,
    )


def pick_job(app, job_id):
    return tune_status(app, job_id, {})


def cancel_tune(app, job_id):
    if not job_id:
        raise gr.Error("Choose a job to cancel first.")
    job = app.jobs.cancel(job_id)
    if not job.active:
        inform("The job has already ended ({state}).", state=job.state)
    else:
        inform("Cancelling; the adapter of a cancelled job is not saved.")


def on_load(app):
    jobs = app.jobs.list("tune", limit=30)
    active = next((j.id for j in jobs if j.active), jobs[0].id if jobs else None)
    names = adapter_names(app)
    latest = max(app.adapters.list(), key=lambda a: a.card.get("created", ""), default=None)
    return (
        gr.update(choices=[(j.title(), j.id) for j in jobs], value=active),
        gr.update(choices=names, value=latest.name if latest else None),
        *adapter_details(app, latest.name if latest else None),
    )


def build(app, demo: gr.Blocks, kb_selector: gr.Dropdown, adapters_changed: gr.State) -> None:
    """``adapters_changed``: set here on a rename or delete, for the other tabs' selectors."""
    gr.Markdown(
        t(
            "Teach the model your wording and facts with a small **adapter** (LoRA). "
            "The base model is not changed; choose the adapter in the Chat tab to use it."
        )
    )
    with gr.Row():
        with gr.Column():
            gr.Markdown(t("#### 1. Training data"))
            source = gr.Radio(
                choices([(s, s) for s in (FILE_SOURCE, DRAFTS_SOURCE, KB_SOURCE)]),
                value=FILE_SOURCE,
                label=t("Learn from"),
            )
            upload = gr.File(
                label=t("Question/answer pairs (CSV, TSV, XLSX, JSONL or Parquet)"),
                file_types=list(RECORD_EXTENSIONS),
            )
            with gr.Row():
                q_col = gr.Dropdown([AUTO], value=AUTO, label=t("Question column"))
                a_col = gr.Dropdown([AUTO], value=AUTO, label=t("Answer column"))
            check_btn = gr.Button(t("Check data"))
            report = gr.Markdown()
            preview = gr.Dataframe(label=t("First rows"), interactive=False, wrap=True, visible=False)
            with gr.Accordion(t("Export the accepted drafts of this knowledge base"), open=False):
                with gr.Row():
                    export_format = gr.Radio(EXPORT_FORMATS, value=".parquet", label=t("As"), scale=3)
                    export_btn = gr.Button(t("Export accepted drafts"), scale=1)
                export_download = gr.File(label=t("Accepted drafts"), visible=False)
        with gr.Column():
            gr.Markdown(t("#### 2. Settings"))
            name = gr.Textbox(label=t("Adapter name"), placeholder=t("e.g. support-tone-v1"))
            preset = gr.Radio(
                choices([(PRESET_HELP[p], p) for p in PRESETS]), value="quick", label=t("How much to train")
            )
            quant = gr.Radio(choices(QUANT_CHOICES), value="4bit", label=t("Base model in memory as"))
            base = gr.Textbox(label=t("Base model"), value=app.settings.model.name)
            with gr.Accordion(t("Advanced"), open=False):
                q = PRESETS["quick"]
                with gr.Row():
                    rank = gr.Number(q["rank"], label=t("LoRA rank"), precision=0, minimum=1)
                    alpha = gr.Number(q["alpha"], label=t("LoRA alpha"), precision=0, minimum=1)
                    dropout = gr.Number(0.05, label=t("Dropout"), minimum=0, maximum=0.9)
                with gr.Row():
                    lr = gr.Number(q["learning_rate"], label=t("Learning rate"))
                    epochs = gr.Number(q["epochs"], label=t("Epochs"), precision=0, minimum=1)
                    max_length = gr.Number(512, label=t("Maximum length (tokens)"), precision=0)
                with gr.Row():
                    batch = gr.Number(4, label=t("Batch size"), precision=0, minimum=1)
                    accum = gr.Number(1, label=t("Gradient accumulation"), precision=0, minimum=1)
                    checkpointing = gr.Checkbox(
                        False, label=t("Gradient checkpointing (less memory, slower)")
                    )
                targets = gr.Textbox(
                    "all-linear", label=t("Target modules (all-linear or e.g. q_proj,v_proj)")
                )
            start_btn = gr.Button(t("Start tuning"), variant="primary")
    gr.Markdown(t("#### 3. Progress"))
    with gr.Row():
        job_pick = gr.Dropdown(label=t("Job"), choices=_job_choices(app), scale=4)
        cancel_btn = gr.Button(t("Cancel job"), variant="stop", scale=1)
    status = gr.HTML(t("No tuning job yet."))  # in the reader's language: built once for all
    plot = gr.LinePlot(
        None,
        x="step",
        y="loss",
        color="series",
        color_map={"training": "#6366f1", "validation": "#f97316"},
        title="Loss (lower is better)",
        height=260,
    )
    plot_cache = gr.State({})
    timer = gr.Timer(1.0)
    gr.Markdown(t("#### 4. Adapters"))
    with gr.Row():
        adapter_pick = gr.Dropdown(label=t("Adapter"), choices=adapter_names(app), scale=3)
        refresh_btn = gr.Button(t("Refresh"), scale=1)
    card = gr.Markdown()
    comparison = gr.Dataframe(
        headers=COMPARISON_HEADERS,
        label=t("Held-out questions, answered before and after tuning"),
        interactive=False,
        wrap=True,
        column_widths=["20%", "24%", "28%", "28%"],
    )
    with gr.Row():
        new_name = gr.Textbox(label=t("New name"), scale=3)
        rename_btn = gr.Button(t("Rename"), scale=1)
    with gr.Row():
        confirm_name = gr.Textbox(label=t("Type the adapter's name to delete it"), scale=3)
        delete_btn = gr.Button(t("Delete adapter"), variant="stop", scale=1)
    with gr.Row():
        zip_btn = gr.Button(t("Download adapter (.zip)"))
        merge_btn = gr.Button(t("Save merged model on the server"))
    download = gr.File(label=t("Download"), visible=False)
    export_note = gr.Markdown()

    data_inputs = [source, upload, kb_selector, q_col, a_col]
    check_btn.click(handler(check_data, app), data_inputs, [report, preview, q_col, a_col])
    upload.change(handler(new_file, app), [upload, kb_selector], [report, preview, q_col, a_col])
    preset.change(apply_preset, [preset], [rank, alpha, lr, epochs])
    start_btn.click(
        handler(start_tune, app),
        [
            *data_inputs,
            name,
            preset,
            quant,
            base,
            rank,
            alpha,
            dropout,
            lr,
            epochs,
            max_length,
            batch,
            accum,
            checkpointing,
            targets,
        ],  # fmt: skip
        [job_pick, plot_cache],
    )
    timer.tick(
        handler(tune_status, app), [job_pick, plot_cache], [status, plot, plot_cache, adapter_pick, job_pick]
    )
    job_pick.change(handler(pick_job, app), [job_pick], [status, plot, plot_cache, adapter_pick, job_pick])
    cancel_btn.click(handler(cancel_tune, app), [job_pick], None)
    adapter_pick.change(handler(adapter_card, app), [adapter_pick], [card, comparison])
    refresh_btn.click(handler(refresh_adapters, app), [adapter_pick], [adapter_pick])
    rename_btn.click(handler(rename_ready, app), [adapter_pick, new_name], None).success(
        handler(rename_adapter, app), [adapter_pick, new_name], [adapter_pick, new_name, adapters_changed]
    )
    delete_btn.click(handler(delete_typed, app), [adapter_pick, confirm_name], None).success(
        handler(delete_adapter, app),
        [adapter_pick, confirm_name],
        [adapter_pick, confirm_name, adapters_changed],
    )
    export_btn.click(handler(export_drafts, app), [kb_selector, export_format], [export_download])
    zip_btn.click(handler(download_adapter, app), [adapter_pick], [download, export_note])
    merge_btn.click(handler(save_merged_model, app), [adapter_pick], [download, export_note])
    # A reloaded page re-attaches to the running job (or shows the latest one).
    demo.load(handler(on_load, app), None, [job_pick, adapter_pick, card, comparison])
