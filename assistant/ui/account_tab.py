"""Account tab: the logged-in user changes their own password (the old one is asked for)."""

from __future__ import annotations

import gradio as gr

from assistant.ui.common import handler
from assistant.ui.locale import t
from knowledge.errors import TsumugiError


def change_password(users, old, new, again, *, caller=None):
    if caller is None or caller.anonymous:
        raise gr.Error("Log in first; only a user has a password to change.")
    if (new or "") != (again or ""):
        raise gr.Error("The two new passwords differ; nothing was changed.")
    try:
        users.change_password(caller.name, old or "", new or "")
    except TsumugiError as exc:
        raise gr.Error(str(exc)) from exc
    return "✅ Password changed; it is needed from your next login.", "", "", ""


def build(users) -> None:
    gr.Markdown(t("#### Change your password"))
    with gr.Row():
        old = gr.Textbox(label=t("Current password"), type="password")
        new = gr.Textbox(label=t("New password (8+ characters)"), type="password")
        again = gr.Textbox(label=t("New password again"), type="password")
    change = gr.Button(t("Change password"), variant="primary")
    outcome = gr.Markdown("")
    change.click(
        handler(change_password, users),
        [old, new, again],
        [outcome, old, new, again],
        api_name="change_password",
    )
