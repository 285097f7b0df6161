"""The page's words in the reader's language.

The English is written where it is used, and it is the key. ``ja.json`` holds the Japanese:

- ``page``: texts fixed when the page is built, or returned as they are by an event:
  ``t("Send")``. Gradio picks the translation in the browser (its language, or the one chosen
  in the page's Settings); a text without one shows its English.
- ``messages``: the notes the server writes beside an answer or a draft (searching, confidence,
  who wrote it, timings): ``say("total {seconds} s", japanese, seconds=...)``, as plain text,
  so an API client reads them too. They follow the language of the question, as the answer
  itself and its refusal do.
- ``told``: what the server tells the reader in a sentence (a toast, a refusal, why a file
  was not added). The page fills its own from their template, ``inform("Deleted the adapter
  {name}.", name=...)`` (:func:`told`); the core's arrive written in English, and
  :func:`translated` finds the template a message was filled from and fills the Japanese with
  the same values (a number field matches only a number, a ``{word}`` one of the catalogue's
  words, "adapter" or "failed", put in its Japanese). These follow the reader's browser
  (:func:`reader_japanese`): Gradio shows a toast as it is sent. A message without a template
  stays English.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from string import Formatter

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


_NUMBERS = {
    "n",
    "size",
    "limit",
    "pages",
    "done",
    "total",
    "added",
    "shown",
    "hidden",
    "before",
    "after",
    "loss",
}
"""Fields that hold a number ("3", "1,024", "0.250", "1/2"): they match nothing else, so a name
around them cannot be cut in the wrong place."""

_FIXED = {english: japanese for english, japanese in _JAPANESE["told"].items() if "{" not in english}


def _pattern(template: str) -> re.Pattern:
    """``template``'s text as it is; each ``{field}`` any text (the shortest that fits), a
    number (:data:`_NUMBERS`), or for ``{word}`` one of the catalogue's words."""
    words = "|".join(re.escape(w) for w in sorted(_FIXED, key=len, reverse=True))
    pieces = []
    for text, field, _, _ in Formatter().parse(template):
        pieces.append(re.escape(text))
        if field == "word":
            pieces.append(f"(?P<word>{words})")
        elif field in _NUMBERS:
            pieces.append(rf"(?P<{field}>\d[\d,./]*)")
        elif field is not None:
            pieces.append(f"(?P<{field}>.+?)")
    return re.compile("".join(pieces), re.DOTALL)


_TOLD = [(_pattern(english), japanese) for english, japanese in _JAPANESE["told"].items() if "{" in english]


def translated(message: str, japanese: bool | None = None) -> str:
    """``message``, sent in English, in Japanese when the reader reads Japanese (``japanese``;
    by default the browser's language) and ``ja.json`` holds it or the template it was filled
    from; as it is otherwise. Messages the core writes come here; the page's own are filled
    from their template in either language (:func:`told`)."""
    if len(message) > 1000 or not (reader_japanese() if japanese is None else japanese):
        return message  # a sentence of ours is shorter: this is a report (a traceback, a log)
    if message in _FIXED:
        return _FIXED[message]
    for pattern, template in _TOLD:
        found = pattern.fullmatch(message)
        if found:
            values = found.groupdict()
            if "word" in values:
                values["word"] = _FIXED[values["word"]]
            return template.format(**values)
    return message


def told(template: str, **values) -> str:
    """A message of the page's, ``template`` filled with ``values``, in the reader's language."""
    japanese = _JAPANESE["told"].get(template) if reader_japanese() else None
    return (japanese or template).format(**values)


def reader_japanese(request=None) -> bool:
    """Whether the browser of this event (``request``, or the one Gradio serves now) asks for
    Japanese first (Accept-Language), as Gradio's translations of the page do unless its
    Settings chose another language. False outside an event: the CLI and tests."""
    if request is None:
        from gradio.context import LocalContext

        request = LocalContext.request.get(None)
    headers = getattr(request, "headers", None) or {}
    first = headers.get("accept-language", "").split(",")[0].split(";")[0].strip().lower()
    return first == "ja" or first.startswith("ja-")


def inform(template: str, **values) -> None:
    """A toast in the reader's language (Gradio heads it with its own word for its kind, not
    with a title the server sends)."""
    gr.Info(told(template, **values) if values else translated(template))


def warn(template: str, **values) -> None:
    """A warning toast in the reader's language."""
    gr.Warning(told(template, **values) if values else translated(template))


def in_readers_language(error: gr.Error, request=None) -> gr.Error:
    """``error``'s sentence in the language of the browser that sent ``request``."""
    error.message = translated(str(error.message), reader_japanese(request))
    return error


def progress_text(event) -> str:
    """A progress bar's caption (a :class:`knowledge.progress.Progress`) in the reader's
    language: the stage and its unit from ``told``, the count, what it is on, the time left."""
    if not reader_japanese():
        return event.describe()
    parts = [
        f"{translated(event.stage, True)}：{event.done:g}/{event.total:g} {translated(event.unit, True)}"
    ]
    if event.message:
        parts.append(translated(event.message, True))
    if event.eta is not None:
        minutes, seconds = divmod(max(0, int(round(event.eta))), 60)
        hours, minutes = divmod(minutes, 60)
        left = (
            f"{hours} 時間 {minutes} 分"
            if hours
            else f"{minutes} 分 {seconds} 秒"
            if minutes
            else f"{seconds} 秒"
        )
        parts.append(f"残り約 {left}")
    return " · ".join(parts)


def table(headers: list[str], rows: list[list]) -> dict:
    """A table's rows with its column names in the reader's language (Gradio translates no
    column name): a value a ``gr.Dataframe`` takes, and an API client reads as any table."""
    return {"headers": [translated(h) for h in headers], "data": rows}
