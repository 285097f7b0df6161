"""The Gradio app: one module per tab, built around a shared :class:`Tsumugi` service."""

from __future__ import annotations

import threading

import gradio as gr

from assistant.service import Tsumugi


def build_app(app: Tsumugi) -> gr.Blocks:
    from assistant.ui import chat_tab, draft_tab, evaluate_tab, knowledge_tab, tune_tab

    names = app.library.names()
    with gr.Blocks(title="Tsumugi") as demo:
        gr.Markdown("# 紡 Tsumugi\nYour documents, a small language model, and answers with sources.")
        kb_selector = gr.Dropdown(
            label="Knowledge base",
            choices=names,
            value=names[0] if names else None,
            interactive=True,
        )
        # A new user has nothing to chat with yet: open on the Knowledge tab.
        with gr.Tabs(selected="chat" if names else "knowledge"):
            with gr.Tab("Chat", id="chat"):
                chat_tab.build(app, kb_selector)
            with gr.Tab("Draft reply", id="draft"):
                draft_tab.build(app, kb_selector)
            with gr.Tab("Knowledge", id="knowledge"):
                knowledge_tab.build(app, kb_selector)
            with gr.Tab("Tune", id="tune"):
                tune_tab.build(app, demo, kb_selector)
            with gr.Tab("Evaluate", id="evaluate"):
                evaluate_tab.build(app, demo, kb_selector)
        demo.load(lambda: gr.update(choices=app.library.names()), None, [kb_selector])
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
