"""Run the web app and the HTTP API in one server (``app.py``), or the API alone (``serve``)."""

from __future__ import annotations

import logging


def build_server(app, ui: bool = True):
    """A FastAPI app with the OpenAI-compatible API under /v1 and, with ``ui``, the Gradio app at /."""
    from assistant.serving.api import create_api

    server = create_api(app)
    if ui:
        import gradio as gr

        from assistant.serving.users import UserStore
        from assistant.ui import build_app

        users = UserStore(app.settings.data_dir)
        demo = build_app(app).queue(default_concurrency_limit=8)
        # With users, everyone logs in; with none (local single-user mode) nobody does.
        auth = users.verify if users.any() else None
        server = gr.mount_gradio_app(
            server,
            demo,
            path="/",
            ssr_mode=False,
            auth=auth,
            auth_message="Tsumugi: log in with the account an admin created for you.",
        )
    return server


def run_server(app, host: str, port: int, ui: bool = True) -> None:
    import uvicorn

    from assistant.serving.users import UserStore, check_exposure
    from assistant.ui import warm_up

    check_exposure(host, UserStore(app.settings.data_dir), app.settings.allow_open)
    if app.settings.demo:
        from assistant.serving.demo import seed

        if seed(app):
            print("Demo mode: seeded a sample knowledge base.", flush=True)
    warm_up(app)
    server = build_server(app, ui)
    where = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    what = f"Tsumugi on {where} (API: {where}/v1)" if ui else f"Tsumugi API on {where}/v1"
    print(what, flush=True)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    uvicorn.run(server, host=host, port=port, log_level="warning")
