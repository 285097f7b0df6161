"""Chat tab: streamed answers grounded in a knowledge base, with a sources panel."""

from __future__ import annotations

import gradio as gr

from assistant.answering.answer import AnswerConfig
from assistant.answering.prompt import conversation_pairs
from assistant.answering.styles import DEFAULT_STYLE, STYLE_CHOICES
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
    shown_answer,
    sources_markdown,
    stop_now,
)
from assistant.ui.locale import choices, say, t
from assistant.ui.pages import paced
from knowledge.errors import TsumugiError
from knowledge.lexical import is_japanese
from knowledge.retrieve import RetrievalConfig


def _text(content) -> str:
    """Text of a chatbot message, whether a string or Gradio's list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


TYPE_FIRST = "Type a question first."
NO_SOURCES = t("_Sources appear here with each answer._")


def question_ready(app, message, kb_name, adapter_name=""):
    """At the click, before the answer's event: a mistake is told as a toast alone.
    Raised by the answering event, it marked each of its outputs (the chat, the question box,
    the sources) with a large "Error" badge."""
    refuse_unready(app, message, kb_name, TYPE_FIRST, adapter_name)


def respond(app, message, history, kb_name, k, temp, max_tokens, precision_choice="auto", adapter_name="", style_choice="", flag=None, *, caller=None):  # fmt: skip
    """Stream an answer. Stop sets this session's ``flag``, which every step checks (the
    question's split, retrieval, the model); the browser going away closes this generator and
    the ``finally`` stops the model within a token: nothing runs on for an abandoned question."""
    refuse_unready(app, message, kb_name, TYPE_FIRST, adapter_name)
    message = message.strip()
    try:
        app.access.check_question(
            caller, kb_name, message, adapter_name, precision_choice, app.settings.model.precision
        )
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    history = list(history or [])
    config = AnswerConfig(
        max_new_tokens=app.access.max_tokens(caller, max_tokens),
        temperature=float(temp),
        retrieval=RetrievalConfig(top_k=int(k)),
        style=style_choice or DEFAULT_STYLE,
        escalate=app.access.may_escalate(caller),
    )
    try:
        model = app.model_config(adapter_name or None, precision_choice or None)
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    turns = ((m.get("role"), _text(m.get("content")).replace(STOPPED, "").strip()) for m in history)
    pairs = conversation_pairs(turns)  # a stopped answer's note is not part of what it said
    history = history + [{"role": "user", "content": message}]

    last = []
    japanese = is_japanese(message)  # the panel's notes follow the question

    def page(answer):
        last[:] = [answer]
        shown = history + [{"role": "assistant", "content": shown_answer(answer) or "…"}]
        panel = sources_markdown(answer.passages, answer.cited, answer.done, japanese)
        if answer.done:  # on top: under the sources, the panel's scroll hid how sure it is
            panel = answer_footer(answer) + "\n\n---\n\n" + panel
        return shown, "", panel

    stop = StopSignal(flag)
    searching = (
        history + [{"role": "assistant", "content": "…"}],
        "",
        say("_Searching the documents…_", japanese),
    )
    try:
        if stop.is_set():  # stopped while it waited its turn: nothing is started
            yield history + [{"role": "assistant", "content": STOPPED}], "", ""
            return
        answers = app.ask(kb_name, message, pairs, config, model=model, stop=stop)
        yield from paced(answers, page, searching, workers=answering(app)["concurrency_limit"])
        if stop.pressed and not (last and last[0].done):
            written = shown_answer(last[0]).strip() if last else ""
            content = f"{written}\n\n{STOPPED}" if written else STOPPED
            panel = sources_markdown(last[0].passages, last[0].cited, False, japanese) if last else ""
            yield history + [{"role": "assistant", "content": content}], "", panel
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    finally:
        stop.finish()


def model_line(app) -> str:
    """Which model answers, for the settings panel."""
    remote = app.settings.chat
    if remote is not None:
        return (
            f"Model: `{remote.model}` at {remote.base_url} (TSUMUGI_CHAT_URL); precision applies to "
            "adapters only, which answer here."
        )
    model = app.settings.model
    return f"Model: `{model.name}` on `{model.device}` (admins choose it in the Models tab)"


def build(app, kb_selector: gr.Dropdown, adapters_changed: gr.State) -> None:
    """``adapters_changed``: set by the Tune tab when it renames or deletes an adapter."""
    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label=t("Assistant"), height=480)
            with gr.Row():
                question = gr.Textbox(
                    placeholder=t("Ask a question about your documents…"),
                    show_label=False,
                    scale=5,
                    submit_btn=False,
                )
                send = gr.Button(t("Send"), variant="primary", scale=1, min_width=80)
                stop = gr.Button(t("Stop"), scale=1, min_width=80)
            clear = gr.Button(t("New conversation"), size="sm")
        with gr.Column(scale=2):
            sources = gr.Markdown(
                NO_SOURCES,
                label=t("Sources"),
                max_height=560,
                container=True,
            )
    with gr.Accordion(t("Settings"), open=False):
        with gr.Row():
            top_k = gr.Slider(1, 10, value=5, step=1, label=t("Passages to retrieve (top-k)"))
            temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.1, label=t("Temperature (0 = most precise)"))
            max_new = gr.Slider(32, 1024, value=256, step=32, label=t("Longest answer (tokens)"))
        with gr.Row():
            style = gr.Radio(
                choices(STYLE_CHOICES),
                value=DEFAULT_STYLE,
                label=t("Answer style"),
                info=t(
                    "Every sentence shown is checked against the passage it cites; the documents' own "
                    "words are shown indented."
                ),
            )
        with gr.Row():
            adapter = gr.Dropdown(
                label=t("Tuned adapter"),
                choices=adapter_choices(app),
                value="",
                info=t("Adapters come from the Tune tab."),
            )
            precision = gr.Dropdown(
                label=t("Precision"),
                choices=[
                    (f"auto ({app.settings.model.resolved_precision()} here)", "auto"),
                    ("fp32 (exact, slowest on CPU)", "fp32"),
                    ("bf16 (fast where the CPU or GPU supports it)", "bf16"),
                    ("8-bit (bitsandbytes, less memory)", "8bit"),
                    ("4-bit NF4 (bitsandbytes, least memory)", "4bit"),
                ],
                value=app.settings.model.precision,
                info=t("Changing it loads the model again (seconds for the default model)."),
            )
            gr.Markdown(lambda: model_line(app))  # read at each page load: admins switch models

    stop_flag = gr.State(CancelFlag())
    inputs = [
        question,
        chatbot,
        kb_selector,
        top_k,
        temperature,
        max_new,
        precision,
        adapter,
        style,
        stop_flag,
    ]
    outputs = [chatbot, question, sources]
    for trigger in (send.click, question.submit):
        trigger(handler(question_ready, app), [question, kb_selector, adapter], None).success(
            handler(arm_cancel, app), [stop_flag], None, queue=False
        ).then(handler(respond, app), inputs, outputs, **answering(app))
    stop.click(handler(stop_now, app), [stop_flag], None, queue=False)
    adapter.focus(lambda: gr.update(choices=adapter_choices(app)), None, [adapter])
    adapters_changed.change(handler(follow_adapters, app), [adapters_changed, adapter], [adapter])
    clear.click(lambda: ([], NO_SOURCES), None, [chatbot, sources])
