"""The page's words in the reader's language.

The English is written where it is used, and it is the key. ``ja.json`` holds the Japanese:

- ``page``: texts fixed when the page is built, or returned as they are by an event:
  ``t("Send")``. Gradio picks the translation in the browser (its language, or the one chosen
  in the page's Settings); a text without one shows its English.
- ``messages``: the notes the server writes beside an answer or a draft (searching, confidence,
  who wrote it, timings): ``say("total {seconds} s", japanese, seconds=...)``, as plain text,
  so an API client reads them too. They follow the language of the question, as the answer
  itself and its refusal do.

Toasts (``gr.Info``, ``gr.Error``) and the other messages built with values are sent as written.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

JAPANESE_FILE = Path(__file__).with_name("ja.json")

_JAPANESE = json.loads(JAPANESE_FILE.read_text(encoding="utf-8"))

I18N = gr.I18n(ja=_JAPANESE["page"])
"""Passed to Gradio where the app is mounted."""


def t(english: str):
    """``english`` as the reader's language shows it (a Gradio translation key). A text with
    braces cannot be one: the page then showed the key's raw marker (``__i18n__{…}``) instead
    of any text, in either language."""
    if "{" in english or "}" in english:
        raise ValueError(f"A text with braces cannot be translated: {english!r}")
    return I18N(english)


def choices(pairs: list[tuple[str, str]]) -> list[tuple]:
    """Choices ``(label, value)`` with their labels translated; the values stay as they are."""
    return [(t(label), value) for label, value in pairs]


def say(english: str, japanese: bool, **values) -> str:
    """A message the server builds: ``english`` (a ``str.format`` template), or its Japanese
    when ``japanese``, filled with ``values``."""
    template = _JAPANESE["messages"].get(english, english) if japanese else english
    return template.format(**values)
