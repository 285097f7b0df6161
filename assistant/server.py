"""Run the web app and the HTTP API in one server (``app.py``), or the API alone (``serve``)."""

from __future__ import annotations

import logging
import os


def build_server(app, ui: bool = True):
    """A FastAPI app with the OpenAI-compatible API under /v1 and, with ``ui``, the Gradio app.

    Where the Gradio app goes depends on the serving mode (see assistant.serving.access): at
    ``/`` with no login (local), at ``/`` behind a login (users), or, on an open server, the
    visitors' page at ``/`` and the full app behind a login at ``/admin``.
    """
    from assistant.serving.api import create_api

    server = create_api(app)
    if ui:
        from fastapi import Request

        from assistant.serving.logins import CLIENT, LoginGuard

        access = app.access
        logins = LoginGuard(access.users, app.settings.login)

        @server.middleware("http")
        async def _client_address(request: Request, call_next):
            CLIENT.set(request.client.host if request.client else None)
            return await call_next(request)

        if access.mode == "open":
            _mount(server, app, "/admin", logins, public=False)
            _mount(server, app, "/", None, public=True)
        else:
            _mount(server, app, "/", logins if access.mode == "login" else None, public=False)
        server.state.access = access
    return server


def _mount(server, app, path: str, logins, public: bool) -> None:
    import gradio as gr

    from assistant.serving.logins import SessionTokens
    from assistant.ui import build_app
    from assistant.ui.common import EVENTS_AT_ONCE
    from assistant.ui.locale import I18N

    demo = build_app(app, public=public).queue(
        default_concurrency_limit=EVENTS_AT_ONCE, max_size=app.access.limits.queue_size
    )
    message = (
        "Tsumugi administration: log in as the admin (created with `python -m assistant users "
        "--add NAME --role admin`, or from the TSUMUGI_ADMIN_PASSWORD secret)."
        if path == "/admin"
        else "Tsumugi: log in with the account an admin created for you."
    )
    gr.mount_gradio_app(
        server,
        demo,
        path=path,
        ssr_mode=False,
        i18n=I18N,
        auth=logins.check if logins else None,
        auth_message=message,
        # The visitors' page has no file input: its upload route takes nothing of size.
        max_file_size=1024 if public else int(app.settings.limits.max_file_mb * 1024 * 1024),
    )
    # Login tokens expire (Gradio's own table never forgets them).
    mounted = next(r.app for r in reversed(server.routes) if getattr(r, "path", None) == path.rstrip("/"))
    mounted.tokens = SessionTokens(app.settings.login.session_hours * 3600)


def run_server(app, host: str, port: int, ui: bool = True) -> None:
    import uvicorn

    from assistant.serving.access import ensure_admin_from_secret
    from assistant.serving.users import UserStore, check_exposure
    from assistant.ui import warm_up

    users = UserStore(app.settings.data_dir)
    # Read once and removed, so no child process (jobs, the text extractor) inherits it.
    secret = os.environ.pop("TSUMUGI_ADMIN_PASSWORD", "")
    if ensure_admin_from_secret(users, os.environ.get("TSUMUGI_ADMIN_USER", "admin") or "admin", secret):
        print("Admin account set from TSUMUGI_ADMIN_PASSWORD.", flush=True)
    check_exposure(host, users, app.settings.allow_open)
    if app.settings.demo:
        from assistant.serving.demo import seed

        if seed(app):
            print("Demo mode: seeded a sample knowledge base.", flush=True)
    warm_up(app)
    server = build_server(app, ui)
    where = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    what = f"Tsumugi on {where} (API: {where}/v1)" if ui else f"Tsumugi API on {where}/v1"
    if ui and server.state.access.mode == "open":
        what += f"; visitors ask and draft, admins log in at {where}/admin"
        if not any(u["role"] == "admin" for u in users.list()):
            what += " (no admin yet: set the TSUMUGI_ADMIN_PASSWORD secret, or run `python -m assistant users --add NAME --role admin`)"
    print(what, flush=True)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    uvicorn.run(server, host=host, port=port, log_level="warning")
