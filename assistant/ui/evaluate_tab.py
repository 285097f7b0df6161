"""Evaluate tab: question sets per knowledge base, runs as jobs, and side-by-side comparison."""

from __future__ import annotations

import gradio as gr

from assistant.evaluation.metrics import METRIC_HELP, METRIC_LABEL, format_metric
from assistant.evaluation.runs import config_matrix, differences
from assistant.evaluation.sets import EvalItem, EvalSet, draft_eval_set, load_eval_set
from assistant.records import RECORD_EXTENSIONS, clip
from assistant.ui.common import (
    EXPORT_FORMATS,
    KB_FIRST,
    export_file,
    followed,
    handler,
    job_progress_html,
    shown_progress,
    upload_path,
)
from assistant.ui.locale import choices, inform, t, translated, warn
from knowledge.errors import TsumugiError
from knowledge.progress import drive_events

BASE = "base model"
PREVIEW_ROWS = 100
"""Questions of a set shown for editing (and sent to the browser); the others stay on the
server and are saved with them."""
CHART_METRICS = ("retrieval_recall", "f1", "citation_precision", "abstention_accuracy")


def _set_choices(app, kb_name):
    if not kb_name or not app.library.exists(kb_name):
        return []
    return app.eval_sets(kb_name).names()


def _run_choices(app, kb_name):
    return [
        (
            f"{r.created} · {r.set_name} · {r.config.label()} · F1 {format_metric('f1', r.metrics.get('f1'))}",
            r.id,
        )
        for r in app.evals.list()
        if not kb_name or r.config.kb in (kb_name, "")
    ]


def metrics_table(runs) -> tuple[list[str], list[list]]:
    headers = ["Metric", *[f"{i}. {r.config.label()}" for i, r in enumerate(runs, 1)], "What it means"]
    rows = [
        [METRIC_LABEL[k], *[format_metric(k, r.metrics.get(k)) for r in runs], METRIC_HELP[k]]
        for k in METRIC_LABEL
    ]
    rows.insert(0, ["Questions", *[f"{r.metrics['answerable']} + {r.metrics['unanswerable']} unanswerable" for r in runs], "Answerable + unanswerable questions in the set."])  # fmt: skip
    return headers, rows


def chart_frame(runs):
    import pandas as pd

    # One bar per metric and run, the runs of a metric side by side (colour tells the run).
    points = [
        [f"{METRIC_LABEL[k]} ({i})", f"{i}. {r.config.label()}", r.metrics[k]]
        for k in CHART_METRICS
        for i, r in enumerate(runs, 1)
        if r.metrics.get(k) is not None
    ]
    if not points:
        return None
    return pd.DataFrame(points, columns=["metric", "run", "value"]).astype({"value": "float64"})


NO_DECOMPOSE = "Without question decomposition"
WITH_ESCALATION = "With escalation to the larger model"


def _row(item: EvalItem) -> list[str]:
    return [clip(item.question), clip(item.expected), clip(item.source), "yes" if item.unanswerable else ""]


def rows_to_set(name, rows, shown: EvalSet | None = None) -> EvalSet:
    """The table's rows as a set named ``name``.

    ``shown`` is the set the table was filled from: a row still as shown stands for its
    question in full (the table's cells are cut for the browser), and when the table still
    holds any of its rows, the questions past the first ``PREVIEW_ROWS`` (never sent to the
    browser) follow the table's."""
    data = rows.values.tolist() if hasattr(rows, "values") else (rows or [])  # a DataFrame from Gradio
    full = {tuple(_row(i)): i for i in shown.items[:PREVIEW_ROWS]} if shown else {}
    out, kept = [], False
    for row in data:
        cells = [("" if c is None else str(c)).strip() for c in list(row) + ["", "", "", ""]][:4]
        if tuple(cells) in full:
            out.append(full[tuple(cells)])
            kept = True
            continue
        question, expected, source, mark = cells
        unanswerable = mark.lower() in ("1", "true", "yes", "x", "✓", "はい")
        if question and (expected or source or unanswerable):
            out.append(EvalItem(question, "" if unanswerable else expected, source, unanswerable))
    if kept:
        out += shown.items[PREVIEW_ROWS:]
    if not out:
        raise TsumugiError("The table has no usable questions: each needs an expected answer, a source, or the unanswerable mark.")  # fmt: skip
    return EvalSet(name, out)


def set_rows(evalset: EvalSet) -> list[list]:
    """The first ``PREVIEW_ROWS`` questions as table rows, each cell cut to a few hundred characters."""
    return [_row(i) for i in evalset.items[:PREVIEW_ROWS]]


def _tell_count(evalset: EvalSet) -> None:
    hidden = len(evalset.items) - PREVIEW_ROWS
    if hidden > 0:
        inform(
            "{n} questions: the table shows the first {shown}, and the other {hidden} are saved with them "
            "as they are.",
            n=len(evalset.items),
            shown=PREVIEW_ROWS,
            hidden=hidden,
        )


def load_file(app, uploaded, shown=None):
    if not uploaded:
        return gr.update(), gr.update(), shown
    path = upload_path(uploaded)
    try:
        evalset = load_eval_set(path, limits=app.settings.limits)
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    if evalset.skipped:
        warn("{n} rows had no question or nothing to check against and were skipped.", n=len(evalset.skipped))
    _tell_count(evalset)
    return set_rows(evalset), path.stem, evalset


def save_ready(app, kb_name, name, rows, shown=None) -> EvalSet:
    """The set the table holds, refused in one sentence when there is none to save. It runs
    at the click, before the save: refused inside that event, Gradio also marked the question
    set picker "Error"."""
    if not kb_name:
        raise gr.Error(KB_FIRST)
    try:
        return rows_to_set((name or "").strip(), rows, shown)
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc


def save_set(app, kb_name, name, rows, shown=None):
    evalset = save_ready(app, kb_name, name, rows, shown)
    try:
        app.eval_sets(kb_name).save(evalset)
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    inform("Saved {n} questions as {name}.", n=len(evalset.items), name=evalset.name)
    return gr.update(choices=_set_choices(app, kb_name), value=evalset.name)


def draft_ready(app, kb_name, count=None) -> None:
    """At the click, before drafting: refused inside the drafting event, Gradio also marked
    the question table "Error"."""
    if not kb_name:
        raise gr.Error(KB_FIRST)


def draft(app, kb_name, count, shown=None, progress=gr.Progress()):
    """The drafted questions in the table. A drafting that fails or finds nothing is told in
    a toast and leaves the table as it was (raised here, it marked the table "Error")."""
    draft_ready(app, kb_name)
    try:
        evalset = drive_events(draft_eval_set(app, kb_name, int(count)), shown_progress(progress))
    except TsumugiError as exc:
        warn(str(exc))
        return gr.update(), gr.update(), shown
    if not evalset.items:
        warn("The model drafted no usable questions; upload a question file instead.")
        return gr.update(), gr.update(), shown
    return set_rows(evalset), evalset.name, evalset


def show_set(app, kb_name, name, shown=None):
    if not kb_name or not name:
        return gr.update(), shown
    try:
        evalset = app.eval_sets(kb_name).get(name)
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    _tell_count(evalset)
    return set_rows(evalset), evalset


def start_eval(app, kb_name, name, chosen_models, ks, closed, first_n, others=None, extra=None):
    # Refused inside this event, as these are, the status panel shows no "Error" mark (unlike
    # saving, whose check runs at the click): a check ahead of it changed nothing a user sees.
    if not kb_name:
        raise gr.Error(KB_FIRST)
    if not name:
        raise gr.Error("Choose a saved question set first (save the table, or pick one under Question set).")
    adapters = [("" if m == BASE else m) for m in (chosen_models or [])]
    if not adapters:
        raise gr.Error("Tick at least one model.")
    if WITH_ESCALATION in (extra or []) and not app.settings.escalation.enabled:
        raise gr.Error("No larger model is configured; set TSUMUGI_ESCALATE_URL and TSUMUGI_ESCALATE_MODEL.")
    bases = [kb_name, *[o for o in (others or []) if o and o != kb_name]]
    try:
        configs = config_matrix(
            bases,
            adapters,
            [int(k) for k in ks or ["5"]],
            closed_book=bool(closed),
            without_decomposition=NO_DECOMPOSE in (extra or []),
            with_escalation=WITH_ESCALATION in (extra or []),
        )
        job = app.start_eval(kb_name, name, configs, limit=int(first_n or 0))
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    inform("Started {n} run(s); results appear below when they finish.", n=len(configs))
    return job.id, job_progress_html(job)


def poll(app, current):
    if not current:
        return gr.update(), gr.update()
    try:
        job = app.jobs.get(current)
    except TsumugiError:
        return "", gr.update()
    runs = gr.update()
    if not job.active and job.state == "done":
        runs = gr.update(choices=_run_choices(app, None), value=job.result.get("runs", []))
    return job_progress_html(job), runs


def cancel_eval(app, current):
    if current:
        app.jobs.cancel(current)
        inform("Cancelling the evaluation; finished runs are kept.")


def compare(app, run_ids):
    try:
        runs = [app.evals.get(r) for r in (run_ids or [])]
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    if not runs:
        return gr.update(value=None), None, gr.update(value=None)
    headers, rows = metrics_table(runs)
    headers = [translated(h) for h in headers]
    rows = [[translated(cell) for cell in row] for row in rows]  # the metrics' names and meanings
    diff_rows = [
        [d["question"], d["expected"], *[f"{s:.2f}: {a}" for s, a in zip(d["scores"], d["answers"])]]
        for d in differences(runs)
    ]
    diff_headers = [
        translated(h)
        for h in ["Question", "Expected", *[f"{i}. answer (score)" for i in range(1, 1 + len(runs))]]
    ]
    share = f"{44 / len(runs):.0f}%"
    answer_share = f"{64 / len(runs):.0f}%"
    return (
        gr.update(value=rows, headers=headers, column_widths=["16%", *[share] * len(runs), "40%"]),
        chart_frame(runs),
        gr.update(
            value=diff_rows or [[translated("(no differences)"), "", *[""] * len(runs)]],
            headers=diff_headers,
            column_widths=["20%", "16%", *[answer_share] * len(runs)],
        ),
    )


def export_set(app, kb_name, name, suffix):
    """The chosen question set as a download."""
    if not name:
        raise gr.Error("Choose a question set to export.")
    try:
        path = export_file(app, app.eval_sets(kb_name).get(name).rows(), f"questions-{name}", suffix)
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    return gr.update(value=path, visible=True)


def export_runs(app, run_ids, suffix):
    """The chosen runs, one row per question and run, as a download."""
    if not run_ids:
        raise gr.Error("Choose the runs to export under Runs to compare.")
    try:
        rows = [row for run_id in run_ids for row in app.evals.get(run_id).rows()]
        path = export_file(app, rows, "evaluation-runs", suffix)
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    return gr.update(value=path, visible=True)


def refresh(app, kb_name):
    return (
        gr.update(choices=_set_choices(app, kb_name)),
        gr.update(choices=[BASE, *app.adapters.names()]),
        gr.update(choices=_run_choices(app, None)),
        gr.update(choices=[n for n in app.library.names() if n != kb_name]),
    )


def follow_models(app, change, chosen):
    """The models to compare after the Tune tab renamed or deleted an adapter: a renamed one
    stays ticked under its new name, a deleted one is unticked (the base model if none is left)."""
    names = [BASE, *app.adapters.names()]
    kept = [followed(m, change, names) for m in chosen or []]
    return gr.update(choices=names, value=list(dict.fromkeys(m for m in kept if m)) or [BASE])


def build(app, demo: gr.Blocks, kb_selector: gr.Dropdown, adapters_changed: gr.State) -> None:
    """``adapters_changed``: set by the Tune tab when it renames or deletes an adapter."""
    gr.Markdown(
        t(
            "Measure how well the assistant answers **your** questions from **your** documents, "
            "and compare models, adapters and settings on the same questions."
        )
    )
    with gr.Row():
        with gr.Column():
            gr.Markdown(t("#### 1. Question set"))
            upload = gr.File(
                label=t(
                    "Questions with expected answers (CSV, XLSX, JSONL or Parquet: question, answer, "
                    "optional source and unanswerable columns)"
                ),
                file_types=list(RECORD_EXTENSIONS),
            )
            with gr.Row():
                set_name = gr.Textbox(label=t("Save as"), placeholder=t("e.g. faq-2026"), scale=3)
                save_btn = gr.Button(t("Save set"), scale=1)
            with gr.Accordion(t("Or draft questions from the documents"), open=False):
                gr.Markdown(
                    t(
                        "The model writes one question and answer per sampled passage. "
                        "Review and correct them in the table, then save."
                    )
                )
                with gr.Row():
                    draft_count = gr.Slider(3, 50, value=10, step=1, label=t("Questions to draft"))
                    draft_btn = gr.Button(t("Draft questions"))
            items = gr.Dataframe(
                headers=["question", "expected answer", "source", "unanswerable"],
                label=t("Questions (editable)"),
                interactive=True,
                wrap=True,
                column_widths=["38%", "38%", "14%", "10%"],
                max_height=320,
            )
            shown = gr.State(None)  # the set the table shows the first rows of, kept on the server
        with gr.Column():
            gr.Markdown(t("#### 2. Run"))
            set_pick = gr.Dropdown(label=t("Question set"), choices=[], allow_custom_value=True)
            models = gr.CheckboxGroup(
                label=t("Models to compare"), choices=[BASE, *app.adapters.names()], value=[BASE]
            )
            top_ks = gr.CheckboxGroup(
                label=t("Passages to retrieve (top-k)"), choices=["3", "5", "10"], value=["5"]
            )
            other_kbs = gr.Dropdown(
                label=t("Also answer from these knowledge bases"),
                info=t("Same questions on bases built with another passage size or embedding model."),
                choices=app.library.names(),
                multiselect=True,
                allow_custom_value=True,
            )
            closed_book = gr.Checkbox(
                False, label=t("Also without retrieval (closed book): what the model knows by itself")
            )
            variants = gr.CheckboxGroup(
                label=t("Also compare"),
                choices=choices([(NO_DECOMPOSE, NO_DECOMPOSE), (WITH_ESCALATION, WITH_ESCALATION)]),
                value=[],
                info=t("Each ticked variant adds runs; escalation needs a larger model in settings."),
            )
            limit = gr.Number(0, label=t("Only the first N questions (0 = all)"), precision=0, minimum=0)
            with gr.Row():
                run_btn = gr.Button(t("Run evaluation"), variant="primary")
                cancel_btn = gr.Button(t("Cancel"), variant="stop")
            job_id = gr.State("")
            status = gr.HTML()
            timer = gr.Timer(1.5)
    gr.Markdown(t("#### 3. Results"))
    with gr.Row():
        runs_pick = gr.Dropdown(
            label=t("Runs to compare"),
            multiselect=True,
            choices=_run_choices(app, None),
            allow_custom_value=True,  # run ids from the API, and runs finished since the page loaded
            scale=5,
        )
        refresh_btn = gr.Button(t("Refresh"), scale=1)
    table = gr.Dataframe(
        headers=["Metric", "Run", "What it means"], label=t("Metrics"), interactive=False, wrap=True
    )
    chart = gr.BarPlot(
        # No colour per run: Gradio 6.31 draws a series that was not in a chart's first value
        # invisibly; the bar labels carry the run number instead.
        None, x="metric", y="value", title="Higher is better (the number is the run's)", height=320,
        y_lim=[0, 1], x_title=" ", sort=None, x_label_angle=-20,
    )  # fmt: skip
    diff = gr.Dataframe(
        headers=["Question", "Expected", "Answers"],
        label=t("Questions where the runs differ most"),
        interactive=False,
        wrap=True,
    )
    with gr.Row():
        export_format = gr.Radio(EXPORT_FORMATS, value=".parquet", label=t("Export as"), scale=2)
        export_set_btn = gr.Button(t("Export the question set"), scale=1)
        export_runs_btn = gr.Button(t("Export the chosen runs"), scale=1)
    export_download = gr.File(label=t("Export"), visible=False)

    upload.change(handler(load_file, app), [upload, shown], [items, set_name, shown])
    save_inputs = [kb_selector, set_name, items, shown]
    save_btn.click(handler(save_ready, app), save_inputs, None).success(
        handler(save_set, app), save_inputs, [set_pick]
    )
    draft_btn.click(handler(draft_ready, app), [kb_selector, draft_count], None).success(
        handler(draft, app), [kb_selector, draft_count, shown], [items, set_name, shown]
    )
    set_pick.change(handler(show_set, app), [kb_selector, set_pick, shown], [items, shown])
    run_btn.click(
        handler(start_eval, app),
        [kb_selector, set_pick, models, top_ks, closed_book, limit, other_kbs, variants],
        [job_id, status],
    )
    timer.tick(handler(poll, app), [job_id], [status, runs_pick])
    cancel_btn.click(handler(cancel_eval, app), [job_id], None)
    runs_pick.change(handler(compare, app), [runs_pick], [table, chart, diff])
    export_set_btn.click(handler(export_set, app), [kb_selector, set_pick, export_format], [export_download])
    export_runs_btn.click(handler(export_runs, app), [runs_pick, export_format], [export_download])
    refresh_outputs = [set_pick, models, runs_pick, other_kbs]
    refresh_btn.click(handler(refresh, app), [kb_selector], refresh_outputs)
    kb_selector.change(handler(refresh, app), [kb_selector], refresh_outputs)
    demo.load(handler(refresh, app), [kb_selector], refresh_outputs)
    adapters_changed.change(handler(follow_models, app), [adapters_changed, models], [models])
