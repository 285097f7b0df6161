"""Tsumugi: the web app and its OpenAI-compatible API (settings from TSUMUGI_* environment variables)."""

from assistant.server import run_server
from assistant.service import Tsumugi

if __name__ == "__main__":
    import sys

    from knowledge.errors import TsumugiError

    try:
        tsumugi = Tsumugi()
        run_server(tsumugi, tsumugi.settings.host, tsumugi.settings.port)
    except TsumugiError as exc:
        sys.exit(f"error: {exc}")
