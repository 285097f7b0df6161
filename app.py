"""Tsumugi: launch the web app (settings come from TSUMUGI_* environment variables)."""

from assistant.service import Tsumugi
from assistant.ui import build_app, warm_up

if __name__ == "__main__":
    tsumugi = Tsumugi()
    warm_up(tsumugi)
    build_app(tsumugi).queue(default_concurrency_limit=4).launch(
        server_name=tsumugi.settings.host, server_port=tsumugi.settings.port
    )
