"""The Gradio app: one module per tab, built around a shared :class:`Tsumugi` service."""

from __future__ import annotations

import threading

import gradio as gr

from assistant.serving.service import Tsumugi


def build_app(app: Tsumugi, public: bool = False) -> gr.Blocks:
    """The web app for the app's serving mode (``app.access``). ``public`` builds the visitors'
    page of an open server: Chat and Draft only, on the public knowledge bases; the other tabs'
    endpoints do not exist there at all."""
    from assistant.serving.status import storage_is_persistent
    from assistant.ui import (
        account_tab,
        admin_tab,
        chat_tab,
        draft_tab,
        evaluate_tab,
        knowledge_tab,
        models_tab,
        tune_tab,
    )
    from assistant.ui.guard import guard_functions
    from assistant.ui.locale import t

    access = app.access
    users = access.users

    def kb_names() -> list[str]:
        names = app.library.names()
        return [n for n in names if n in access.public_kbs()] if public else names

    names = kb_names()
    with gr.Blocks(title="Tsumugi") as demo:
        gr.Markdown(t("# 紡 Tsumugi\nYour documents, a small language model, and answers with sources."))
        if not storage_is_persistent(app.settings.data_dir):
            gr.Markdown(
                t(
                    "⚠️ **Temporary storage**: this Space has no persistent storage, so uploads, adapters "
                    "and drafts are lost when it restarts. Add persistent storage in the Space settings to "
                    "keep them."
                )
            )
        if public:
            gr.Markdown(
                t(
                    "This is a public demo: ask questions and draft replies from the sample documents. "
                    "Answers are kept short. The team's admin manages documents and tuning at "
                    "[/admin](/admin)."
                )
            )
        if app.settings.demo:
            gr.Markdown(
                t(
                    "👋 **Demo**: a sample knowledge base of outdoor-gear manuals is loaded. Ask “How many "
                    "people fit in the TrailMaster X4 Tent?” in Chat, or paste a customer email in Draft "
                    "reply."
                )
            )
        kb_selector = gr.Dropdown(
            label=t("Knowledge base"),
            choices=names,
            value=names[0] if names else None,
            interactive=True,
        )
        # The Tune tab's renames and deletes, followed by the adapter selectors of the others.
        adapters_changed = gr.State(None)
        # A new user has nothing to chat with yet: open on the Knowledge tab.
        whoami = gr.Markdown(visible=False)
        # Every handler checks the caller's role on the server; agents do not even see the
        # admin tabs. With no users (local single-user mode) everyone may do everything.
        agent_fns: set = set()
        admin_fns: set = set()
        admin_tabs = []
        with gr.Tabs(selected="chat" if names else "knowledge"):
            with gr.Tab(t("Chat"), id="chat"):
                before = set(demo.fns)
                chat_tab.build(app, kb_selector, adapters_changed)
            with gr.Tab(t("Draft reply"), id="draft"):
                draft_tab.build(app, kb_selector, adapters_changed, public=public)
            if access.mode != "local" and not public:
                with gr.Tab(t("Account"), id="account"):
                    account_tab.build(users)
            agent_fns |= set(demo.fns) - before
            for label, tab_id, module in (
                ()
                if public
                else (
                    (t("Knowledge"), "knowledge", knowledge_tab),
                    (t("Tune"), "tune", tune_tab),
                    (t("Evaluate"), "evaluate", evaluate_tab),
                    (t("Models"), "models", models_tab),
                    (t("Admin"), "admin", admin_tab),
                )
            ):
                with gr.Tab(label, id=tab_id) as tab:
                    before = set(demo.fns)
                    if module is admin_tab:
                        module.build(app)
                    elif module in (tune_tab, evaluate_tab):
                        module.build(app, demo, kb_selector, adapters_changed)
                    else:
                        module.build(app, demo, kb_selector)
                    admin_fns |= set(demo.fns) - before
                admin_tabs.append(tab)

        def on_load(chosen: str | None, request: gr.Request):
            username = getattr(request, "username", None)
            caller = access.caller(username)
            role = caller.role if caller else None
            tabs = [gr.update(visible=role == "admin") for _ in admin_tabs]
            who = (
                gr.update(value=f"Logged in as **{username}** ({role}) · [Log out](logout)", visible=True)
                if username
                else gr.update(visible=False)
            )
            # The page was built when the server started: a base made since (or the first
            # one) is chosen on load, not left blank for every Send to refuse.
            names = kb_names()
            chosen = chosen if chosen in names else (names[0] if names else None)
            return [gr.update(choices=names, value=chosen), who, *tabs]

        demo.load(on_load, [kb_selector], [kb_selector, whoami, *admin_tabs])
        guard_functions(demo, agent_fns, "agent", access)
        guard_functions(demo, admin_fns, "admin", access)
    return demo


def warm_up(app: Tsumugi) -> threading.Thread:
    """Load the chat model and the embedder in the background so the first answer is quick."""

    def run() -> None:
        from knowledge.embed import get_embedder

        try:
            get_embedder(app.settings.embed_model)
            app.chat_model()
        except Exception as exc:  # reported again, to the user, when they ask
            print(f"warning: warm-up failed: {exc}")

    thread = threading.Thread(target=run, name="warm-up", daemon=True)
    thread.start()
    return thread
