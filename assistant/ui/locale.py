"""The page's words in the reader's language.

The English is written where it is used, and it is the key: ``t("Send")``. Gradio picks the
translation in the browser (its language, or the one chosen in the page's Settings) from
``ja.json``; a text without a translation shows its English. Only texts fixed when the page is
built or an event returns them can be translated this way: a toast (``gr.Info``, ``gr.Error``)
and a message built from values are sent as written.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

JAPANESE_FILE = Path(__file__).with_name("ja.json")

I18N = gr.I18n(ja=json.loads(JAPANESE_FILE.read_text(encoding="utf-8")))
"""Passed to Gradio where the app is mounted."""


def t(english: str):
    """``english`` as the reader's language shows it (a Gradio translation key). A text with
    braces cannot be one: the browser formats translations as ICU messages, where ``{reply}`` is
    a placeholder, and shows such a key as raw markup."""
    if "{" in english or "}" in english:
        raise ValueError(f"A text with braces cannot be translated: {english!r}")
    return I18N(english)


def choices(pairs: list[tuple[str, str]]) -> list[tuple]:
    """Choices ``(label, value)`` with their labels translated; the values stay as they are."""
    return [(t(label), value) for label, value in pairs]
