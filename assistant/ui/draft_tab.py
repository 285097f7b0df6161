"""Draft reply tab: a customer's message in, a grounded reply to edit, accept or reject."""

from __future__ import annotations

import html
import time

import gradio as gr

from assistant.answering.styles import DEFAULT_STYLE, STYLE_CHOICES
from assistant.drafting.compose import NO_MESSAGE, DraftConfig
from assistant.ui.common import (
    STOPPED,
    CancelFlag,
    StopSignal,
    adapter_choices,
    answer_footer,
    answering,
    arm_cancel,
    follow_adapters,
    handler,
    refuse_unready,
    sources_markdown,
    stop_now,
)
from assistant.ui.locale import choices, say, t, table, told, translated
from assistant.ui.pages import paced
from knowledge.errors import TsumugiError
from knowledge.lexical import is_japanese
from knowledge.text import strip_citations

TONE_CHOICES = [("Formal", "formal"), ("Friendly", "friendly"), ("Concise", "concise")]


def stats_markdown(app, kb_name: str | None) -> str:
    s = app.drafts.stats(kb_name or None)
    counts = dict(drafts=s["drafts"], accepted=s["accepted"], rejected=s["rejected"], pending=s["pending"])
    share = "–" if s["escalated_share"] is None else f"{s['escalated_share']:.0%}"
    drafts = (
        told("Drafts in **{kb}**: {drafts} ({accepted} accepted, {rejected} rejected, {pending} pending)",
             kb=html.escape(kb_name), **counts)
        if kb_name
        else told("Drafts: {drafts} ({accepted} accepted, {rejected} rejected, {pending} pending)", **counts)
    )  # fmt: skip
    answers = told(
        "answers escalated to the larger model: {escalated} of {answers} ({share}) · marked for review: {review}",
        escalated=s["escalated"],
        answers=s["answers"],
        share=share,
        review=s["needs_review"],
    )
    escalation = html.escape(translated(app.settings.escalation.describe()))
    return (
        f"{drafts} · {answers}  \n<sub>{escalation} "
        f"{translated('Accepted drafts can train an adapter in the Tune tab.')}</sub>"
    )


RECENT_HEADERS = ["when", "status", "confidence", "escalated", "message", "reply or reason"]


def recent_rows(app, kb_name: str | None) -> dict:
    rows = []
    for d in app.drafts.list(kb=kb_name or None, limit=20):
        rows.append(
            [
                time.strftime("%m-%d %H:%M", time.localtime(d.created)),
                translated(d.status),
                "–" if d.confidence is None else f"{d.confidence:.2f}",
                translated("yes") if d.escalated else "",
                d.message[:80].replace("\n", " "),
                (d.final or d.reason or "")[:80].replace("\n", " "),
            ]
        )
    return table(RECENT_HEADERS, rows)


def message_ready(app, text, kb_name, adapter_name=""):
    """At the click, before the draft's event: a mistake is told as a toast alone,
    not as an "Error" badge on each of the draft's outputs."""
    refuse_unready(app, text, kb_name, NO_MESSAGE, adapter_name)


def run_draft(app, text, kb_name, tone_value, adapter_name, signature_text, template_text, style_value="", flag=None, *, caller=None):  # fmt: skip
    """Stream a draft; Stop sets this session's ``flag``, and a closed generator's ``finally``
    stops the model too."""
    refuse_unready(app, text, kb_name, NO_MESSAGE, adapter_name)
    stop = StopSignal(flag)
    try:
        app.access.check_question(caller, kb_name, text or "", adapter_name)
        config = DraftConfig(
            tone=tone_value or "formal",
            signature=signature_text or "",
            template=template_text or "",
            style=style_value or DEFAULT_STYLE,
            escalate=app.access.may_escalate(caller),
            max_new_tokens=app.access.max_tokens(caller, DraftConfig.max_new_tokens),
        )
        model = app.model_config(adapter_name or None)
        author = caller.name if caller is not None and caller.name else ""
        if stop.is_set():  # stopped while it waited its turn: nothing is started
            yield "", f"{STOPPED} It was not saved.", "", "", ""
            return
        drafts = app.draft(kb_name, text or "", config, model=model, stop=stop, author=author)
        searching = ("", say("_Searching the documents…_", is_japanese(text or "")), "", "", "")
        last = []

        def page(answer) -> tuple:
            last[:] = [answer]
            return _draft_page(answer)

        yield from paced(drafts, page, searching, workers=answering(app)["concurrency_limit"])
        if stop.pressed and not (last and last[0].done):
            answer = last[0] if last else None
            sources = (
                sources_markdown(answer.passages, answer.cited, False, is_japanese(answer.question))
                if answer
                else ""
            )
            yield answer.text if answer else "", f"{STOPPED} It was not saved.", sources, "", ""
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    finally:
        stop.finish()


def _draft_page(answer) -> tuple:
    """The Draft tab's outputs for one state of a streamed draft."""
    japanese = is_japanese(answer.question)
    head = answer_footer(answer) if answer.done else say("_Drafting…_", japanese)
    if answer.escalated and not answer.done:
        head = say("_The small model was unsure; asking {model}…_", japanese, model=html.escape(answer.model))
    return (
        answer.text,
        head,
        sources_markdown(answer.passages, answer.cited, answer.done, japanese),
        answer.draft_id,
        "",
    )


def _decider(caller) -> dict:
    """Who decides a draft: local mode (no caller) is its single admin."""
    if caller is None:
        return {"by": None, "admin": True}
    return {"by": caller.name, "admin": caller.is_admin}


def accept(app, draft, text, strip, kb_name, *, caller=None):
    if not draft:
        raise gr.Error("Draft a reply first.")
    final = strip_citations(text) if strip else text
    try:
        stored = app.drafts.accept(draft, final, **_decider(caller))
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    note = told(
        "✅ Accepted and stored ({id}); it is offered as training data in the Tune tab.", id=stored.id
    )
    return note, *recent_drafts(app, kb_name, caller=caller)


def reject(app, draft, why, kb_name, *, caller=None):
    if not draft:
        raise gr.Error("Draft a reply first.")
    try:
        stored = app.drafts.reject(draft, why, **_decider(caller))
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    note = told("Rejected ({id}): {reason}", id=stored.id, reason=html.escape(stored.reason or ""))
    return note, *recent_drafts(app, kb_name, caller=caller), ""


def recent_drafts(app, kb_name, *, caller=None):
    """The drafts panel for ``kb_name``; empty for a visitor of a public page."""
    if caller is not None and caller.is_visitor:
        return "", []
    return stats_markdown(app, kb_name), recent_rows(app, kb_name)


def build(app, kb_selector: gr.Dropdown, adapters_changed: gr.State, public: bool = False) -> None:
    """``adapters_changed``: set by the Tune tab when it renames or deletes an adapter."""
    gr.Markdown(
        t(
            "Paste a customer's email or chat message. Tsumugi drafts a reply from your documents, in "
            "the customer's language, with the passages it used. Edit it, then accept it (it becomes "
            "training data) or reject it with a reason."
        )
    )
    with gr.Row():
        with gr.Column(scale=3):
            message = gr.Textbox(
                label=t("Customer message"),
                lines=7,
                placeholder=t("Hello, I bought the … and …"),
            )
            with gr.Row():
                tone = gr.Radio(choices(TONE_CHOICES), value="formal", label=t("Tone"))
                style = gr.Radio(choices(STYLE_CHOICES), value=DEFAULT_STYLE, label=t("Answer style"))
                adapter = gr.Dropdown(
                    label=t("Tuned adapter"), choices=adapter_choices(app), value="", allow_custom_value=True
                )
            with gr.Accordion(t("Signature and reply template"), open=False):
                signature = gr.Textbox(
                    label=t("Signature"), lines=2, placeholder=t("Aiko Tanaka\nCustomer Support")
                )
                template = gr.Textbox(
                    label=t("Reply template (optional)"),
                    lines=4,
                    placeholder="Dear {name},\n\n{reply}\n\nBest regards,\n{signature}",
                    # Not translated: a translation key cannot hold braces (assistant/ui/locale.py).
                    info="Put {reply} where the drafted answer goes and {signature} for the signature; "
                    "empty uses a greeting and closing suited to the tone and language.",
                )
            with gr.Row():
                draft_btn = gr.Button(t("Draft reply"), variant="primary")
                stop_btn = gr.Button(t("Stop"))
            status = gr.Markdown("")
            reply = gr.Textbox(
                label=t("Reply (edit freely before accepting)"), lines=12, interactive=True, buttons=["copy"]
            )
            with gr.Row():
                remove_marks = gr.Button(t("Remove citation marks"), size="sm")
                strip_on_accept = gr.Checkbox(value=True, label=t("Remove [n] marks from the accepted reply"))
            with gr.Row():
                accept_btn = gr.Button(t("Accept reply"), variant="primary")
                reason = gr.Textbox(
                    placeholder=t("Why is it wrong? (facts, tone, missing part…)"), show_label=False, scale=3
                )
                reject_btn = gr.Button(t("Reject"), variant="stop")
            decision = gr.Markdown("")
            draft_id = gr.Textbox(visible=False)
        with gr.Column(scale=2):
            sources = gr.Markdown(
                t("_The passages used for the draft appear here._"),
                label=t("Sources"),
                max_height=640,
                container=True,
            )
    # Visitors of a public page never see other people's drafts (customers' messages).
    with gr.Accordion(t("Recent drafts"), open=False, visible=not public):
        stats = gr.Markdown(None if public else stats_markdown(app, None))
        recent = gr.Dataframe(
            headers=RECENT_HEADERS,
            value=None if public else recent_rows(app, None),
            interactive=False,
            wrap=True,
        )

    stop_flag = gr.State(CancelFlag())
    inputs = [message, kb_selector, tone, adapter, signature, template, style, stop_flag]
    event = (
        draft_btn.click(handler(message_ready, app), [message, kb_selector, adapter], None)
        .success(handler(arm_cancel, app), [stop_flag], None, queue=False)
        .then(
            handler(run_draft, app),
            inputs,
            [reply, status, sources, draft_id, decision],
            api_name="draft",
            **answering(app),
        )
    )
    event.then(handler(recent_drafts, app), [kb_selector], [stats, recent])
    stop_btn.click(handler(stop_now, app), [stop_flag], None, queue=False)
    remove_marks.click(lambda text: strip_citations(text or ""), [reply], [reply])
    accept_btn.click(
        handler(accept, app),
        [draft_id, reply, strip_on_accept, kb_selector],
        [decision, stats, recent],
        api_name="accept_draft",
    )
    reject_btn.click(
        handler(reject, app),
        [draft_id, reason, kb_selector],
        [decision, stats, recent, reason],
        api_name="reject_draft",
    )
    adapter.focus(lambda: gr.update(choices=adapter_choices(app)), None, [adapter])
    adapters_changed.change(handler(follow_adapters, app), [adapters_changed, adapter], [adapter])
    kb_selector.change(handler(recent_drafts, app), [kb_selector], [stats, recent])
