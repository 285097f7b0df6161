"""What a question asks for, where its words say it: a number. "How many minutes?", 「何分
かかりますか？」 and 「いくらですか？」 are answered by a number (with the unit asked for, where
one is named), and a sentence without one does not answer them however many of the question's
words it repeats: 「メニューから「白米」を選び、炊飯ボタンを押してください。」 was the answer to
「白米が炊けるまで何分かかりますか？」, at high confidence, beside 「炊き上がりまでの時間は約45分
です。」 in the same paragraph.

The expected answer type is the oldest check in question answering; only the type every
language marks plainly is checked here (how many / how long / 何+counter / いくら), and a number
the question itself holds ("開港を約したのは1863年, 実際には何年?") does not answer it.
"""

from __future__ import annotations

import re
import unicodedata

from assistant.answering.bounds import numbers
from knowledge.text import LIST_MARKER, strip_citations

_COUNTERS = (
    "時間|日間|週間|年間|年度|世紀|か月|ヶ月|ケ月|カ月|ヵ月|キロ|メートル|センチ|ミリ|グラム|リットル|種類|段階|"
    "パーセント|分|秒|時|日|週|月|年|回|個|人|名|歳|才|円|度|枚|台|本|冊|件|点|杯|倍|割|階|番|号|代|畳|合|%"
)
_ASKS_JA = re.compile(
    rf"[何幾](?P<unit>{_COUNTERS})|いくつ|幾つ|いくら|幾ら|どのくらい|どれくらい|どのぐらい|どれぐらい|どれほど|どの程度"
)
_ASKS_EN = re.compile(
    r"\bhow (?:many|much|long|often|old|far|heavy|tall|wide|big|large|fast|high|deep|soon)\b"
    r"|\bwhat (?:year|percentage|temperature|price)\b",
    re.I,
)
_KANJI_NUMBER = "[一二三四五六七八九十百千万半数]"
_NUMBER_WORDS = re.compile(
    r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|"
    r"forty|fifty|hundred|thousand|dozen|once|twice|half|several|free|(?:an?|per|each|every) "
    r"(?:second|minute|hour|day|week|month|season|year)s?)\b"
    rf"|{_KANJI_NUMBER}+(?:{_COUNTERS})|無料",
    re.I,
)
_TIME = re.compile("秒|分|時間|時|日間|日|週間|週|[かヶケカヵ]月|月|年間|年度|年|世紀")
"""Counters of time: any answers a question asking another (何時間 by 約90分, 何年度 by 1962年)."""


def number_asked(question: str) -> str | None:
    """The unit a question asks a number of ("分" for 何分; "" when it asks for a number without
    naming one: how many, いくら), or None when it does not ask for a number."""
    question = unicodedata.normalize("NFKC", question)
    found = _ASKS_JA.search(question)
    if found:
        return found.group("unit") or ""
    return "" if _ASKS_EN.search(question) else None


def gives_number(text: str, question: str, spelled: bool = True) -> bool:
    """Whether ``text`` answers ``question`` with a number where the question asks for one (any
    text does when it does not): a number the question does not hold, followed by the unit asked
    for where one is named ("約45分" for 何分; 45 alone, or 45 the question already said, does not).
    With ``spelled`` off, only digits count: "six months" and 三日 do, but so does "On one hand"."""
    unit = number_asked(question)
    if unit is None:
        return True
    # Citation marks and list numbers are not answers.
    lines = strip_citations(unicodedata.normalize("NFKC", text)).splitlines()
    text = "\n".join(LIST_MARKER.sub("", line) for line in lines)
    given = numbers(text) - numbers(unicodedata.normalize("NFKC", question))
    if unit:
        pattern = _TIME.pattern if _TIME.fullmatch(unit) else re.escape(unit)
        after = re.compile(rf"(?P<n>\d+(?:[.,]\d+)*|{_KANJI_NUMBER}+)\s*(?:{pattern})")
        found = [m.group("n").replace(",", "") for m in after.finditer(text)]
        return any(n in given or (spelled and not n[0].isdigit()) for n in found)
    return bool(given) or (spelled and bool(_NUMBER_WORDS.search(text)))
