"""Numbers with a bound on them ("over 50", "5,000円以上"): a threshold quoted without its
other side, or a number repeated without its bound, says something the documents do not."""

from __future__ import annotations

import re
import unicodedata

_BOUNDED = re.compile(
    r"\b(?:over|under|above|below|more than|less than|fewer than|at least|at most|up to|exceeding)\s+"
    r"[$€£¥]?(?P<after>\d+(?:[.,]\d+)*)(?![A-Za-z0-9])"
    r"|(?<![A-Za-z0-9.,])(?P<before>\d+(?:[.,]\d+)*)(?![A-Za-z0-9])[^。、.!?\n]{0,10}?"
    r"(?:以上|未満|以下(?!の)|を?超え|超|\bor (?:more|less|over|under)\b|\band (?:over|above|up)\b)",
    re.I,
)
"""A number with a bound on it: "over 50", "at least 2", "5,000円（税込）以上", "3 or more"."""
_WHOLE_NUMBER = re.compile(r"(?<![A-Za-z0-9.,])\d+(?:[.,]\d+)*(?![A-Za-z0-9])")
"""A number standing as one ("5,000", "12"), not a digit inside a name ("X4")."""


def numbers(text: str, bounded: bool = False) -> set[str]:
    """The numbers of ``text`` (only those with a bound on them, if ``bounded``), commas dropped."""
    text = unicodedata.normalize("NFKC", text)
    if bounded:
        found = [m.group("after") or m.group("before") for m in _BOUNDED.finditer(text)]
    else:
        found = _WHOLE_NUMBER.findall(text)
    return {n.replace(",", "") for n in found}


def drops_bound(sentence: str, closest: str) -> bool:
    """Whether ``sentence`` repeats a number that ``closest`` bounds ("5,000円以上", "over 50")
    without the bound: "ご注文金額が5,000円です" from "ご注文金額が5,000円以上の場合、送料は無料です"
    passed every other support test, at high confidence."""
    bounded = numbers(closest, bounded=True)
    return bool((numbers(sentence) & bounded) - numbers(sentence, bounded=True))
