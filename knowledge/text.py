"""One text toolkit: what a sentence is, and what a citation mark is.

Chunking, evidence selection, the support check, loop detection and the confidence signals
all ask these questions; they get the same answer from here.
"""

from __future__ import annotations

import re

# A sentence ends at . ! ? followed by space, or at Japanese 。！？ (with closing brackets),
# or at a line break.
_SENTENCE = re.compile(r".+?(?:[.!?](?=\s)|[。！？!?][」』）)\"']*|\n|$)", re.DOTALL)

CITATION = re.compile(r"\[(\d{1,2})\]")
"""A citation mark: [1] … [99], the number of a passage given to the model."""

LIST_MARKER = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•・])\s+")
"""The start of a list item or a numbered step."""

_END = ".!?。！？"
_ENDED = re.compile(rf"[{_END}][」』）)\"'’”]*$")


def ends_sentence(text: str) -> bool:
    """Whether ``text`` ends with a sentence's final mark (closing brackets and quotes after it)."""
    return bool(_ENDED.search(text))


_POINTS_BACK = re.compile(
    r"\b(?:it|its|they|them|their|this|that|these|those|one)\b(?!-)"  # not "one-year"
    r"|(?:それ|これ|あれ)(?!ば|ぞれ|から|とも|まで)"  # not あれば, それぞれ, これから…
    r"|その(?!他|ほか|まま|後|場)|この(?!度|まま|ほか|後|間|頃)|あの(?![、ー])|そちら|こちら",
    re.I,
)
_EXPLETIVE = re.compile(  # "it" that stands for nothing said before
    r"\b(?:does|did|will|would|can|could|should)\s+it\s+take\b"
    r"|\b(?:is\s+it|it\s+is|it's)\s+(?:possible\s+to|necessary\s+to|true\s+that)\b",  # not "is it easy to clean?"
    re.I,
)


def points_back(text: str) -> bool:
    """Whether ``text`` points back to something named before ("is it waterproof?",
    "この商品は…"): what it asks about is in the conversation, not in the text."""
    return bool(_POINTS_BACK.search(_EXPLETIVE.sub(" ", text)))


def split_sentences(text: str) -> list[tuple[str, str]]:
    """Split into ``(sentence, separator_before)`` pairs that rejoin to the original text."""
    pieces: list[tuple[str, str]] = []
    pos = 0
    for match in _SENTENCE.finditer(text):
        raw = match.group(0)
        sentence = raw.strip()
        if not sentence:
            continue
        start = match.start() + (len(raw) - len(raw.lstrip()))
        pieces.append((sentence, text[pos:start]))
        pos = start + len(sentence)
    return pieces


def sentences(text: str) -> list[str]:
    """The sentences of ``text``, stripped, in order."""
    return [s for s, _ in split_sentences(text)]


def citations(text: str) -> list[int]:
    """The numbers of the citation marks in ``text``, in order (repeats kept)."""
    return [int(m.group(1)) for m in CITATION.finditer(text)]


def strip_citations(text: str) -> str:
    """The text without [n] marks, for what goes to a customer or back into a prompt."""
    return re.sub(r"\s*\[\d{1,2}\]", "", text).strip()


def cite(sentence: str, n: int) -> str:
    """``sentence`` with a [n] mark before its final punctuation (after it for Japanese)."""
    sentence = sentence.rstrip()
    if sentence and sentence[-1] in _END:
        body, end = sentence[:-1], sentence[-1]
        return f"{body}[{n}]{end}" if end in "。！？" else f"{body} [{n}]{end}"
    return f"{sentence} [{n}]"


def joiner(japanese: bool) -> str:
    """What joins two sentences: nothing in Japanese, a space otherwise."""
    return "" if japanese else " "
