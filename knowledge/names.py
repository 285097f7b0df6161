"""Names people give things: knowledge bases, users, keys and documents.

One spelling per name: names are normalised to Unicode NFC, so ``é`` typed as one character
and as ``e`` plus an accent are the same name. Characters that change how a name reads
without showing themselves (controls, text-direction overrides such as U+202E, which turns
``txt.exe`` around) are refused with a sentence, never stored.
"""

from __future__ import annotations

import re
import unicodedata

from knowledge.errors import TsumugiError

_BIDI = {
    "\u061c": "an Arabic letter mark",
    "\u200e": "a left-to-right mark",
    "\u200f": "a right-to-left mark",
    "\u202a": "a left-to-right embedding",
    "\u202b": "a right-to-left embedding",
    "\u202c": "a text-direction pop",
    "\u202d": "a left-to-right override",
    "\u202e": "a right-to-left override",
    "\u2066": "a left-to-right isolate",
    "\u2067": "a right-to-left isolate",
    "\u2068": "a first-strong isolate",
    "\u2069": "a text-direction isolate pop",
}
_INVISIBLE = {"\u200b": "a zero-width space", "\u2060": "a word joiner", "\ufeff": "a byte-order mark"}

_NAME = re.compile(r"^[^\W_][\w\- .]{0,62}[\w]$|^[^\W_]$")
_DRIVE = re.compile(r"^[A-Za-z]:$")


def _hidden_character(name: str) -> str | None:
    """A description of the first character in ``name`` that must not be in a name, or None."""
    for char in name:
        code = f"U+{ord(char):04X}"
        if char in _BIDI:
            return f"{_BIDI[char]} ({code})"
        if char in _INVISIBLE:
            return f"{_INVISIBLE[char]} ({code})"
        if unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp"):
            return f"a control character ({code})"
    return None


def spelling(name: str | None) -> str:
    """The one spelling of ``name`` that is stored and looked up: NFC, without surrounding spaces."""
    return unicodedata.normalize("NFC", name or "").strip()


def clean_name(name: str, what: str) -> str:
    """``name`` in NFC without surrounding spaces; refuses control and text-direction characters."""
    name = spelling(name)
    bad = _hidden_character(name)
    if bad:
        raise TsumugiError(
            f"The {what} name {name!r} contains {bad}, which can hide or reverse how the name "
            "reads; remove it and try again."
        )
    return name


def check_name(name: str, what: str = "knowledge-base") -> str:
    """A name that doubles as a folder name: letters (any script), digits, - _ . and spaces.

    Returns the name as stored (NFC, stripped); raises :class:`TsumugiError` with a sentence."""
    name = clean_name(name, what)
    if not _NAME.match(name) or ".." in name:
        raise TsumugiError(
            f"{name!r} is not a usable {what} name; use 1-64 letters, digits, spaces, "
            "'-', '_' or '.', starting and ending with a letter or digit."
        )
    return name


def document_name(name: str) -> str:
    """The name a document is known by: a relative path such as ``teamA/README.md``.

    Backslashes count as ``/``; empty, ``.`` and ``..`` segments, a leading ``/`` and a
    Windows drive are dropped, so a name never points outside its knowledge base
    (``../../evil.md`` is ``evil.md``). Raises :class:`TsumugiError` for a name with control
    or text-direction characters, or with nothing left."""
    name = clean_name(name, "document")
    parts = [p.strip() for p in name.replace("\\", "/").split("/")]
    if parts and _DRIVE.match(parts[0]):
        parts = parts[1:]
    parts = [p for p in parts if p not in ("", ".", "..")]
    if not parts:
        raise TsumugiError(f"The document name {name!r} has no file name in it; give the file a name.")
    return "/".join(parts)


def shown_document_name(name: str) -> str:
    """``document_name(name)``, or ``name`` itself when it is refused (the refusal comes later)."""
    try:
        return document_name(name)
    except TsumugiError:
        return name
