"""What a question asks for, where its words say it: a number. "How many minutes?", 「何分
かかりますか？」 and 「いくらですか？」 are answered by a number (of its kind, where the question
counts a time, people or money), and a sentence without one does not answer them however many
of the question's words it repeats: 「メニューから「白米」を選び、炊飯ボタンを押してください。」
answered 「白米が炊けるまで何分かかりますか？」 at high confidence, beside 「炊き上がりまでの
時間は約45分です。」 in the same paragraph.

The expected answer type is the oldest check in question answering; only the type both
languages mark plainly is checked here: how many / how much / how long / how often (and a few
more) where a question starts, 何 with a counter (何分, 何年度, 何人), いくら, いくつ, どのくらい.
Their other uses ask nothing: 何度も試しましたが, 何時間も待ちました, 何日か前に, いくら押しても,
いくつか質問が, "no matter how long I hold it". The check is lenient, as it caps a confidence:
an amount in words answers too ("free", "daily", "a lifetime", 三つ, 翌営業日, 無期限), and so
does a list for how many.
"""

from __future__ import annotations

import re
import unicodedata

from knowledge.text import LIST_MARKER, strip_citations

_COUNTERS = (
    "時間|日間|週間|年間|年度|世紀|か月|ヶ月|ケ月|カ月|ヵ月|キロ|メートル|センチ|ミリ|グラム|リットル|種類|段階|"
    "パーセント|分|秒|時|日|週|月|年|回|個|人|名|歳|才|円|度|枚|台|本|冊|件|点|杯|倍|割|階|番|号|代|畳|合|%"
)
_NOT_ASKING = r"(?!も|でも|か(?![かけら]))"
"""何度も, 何時でも, 何日か前, いくつか (but 何日かかりますか, 何分かけて and 何時から ask)."""
_ASKS_JA = re.compile(
    # Atomic: 何時間も may not fall back to 何時 and ask.
    rf"何(?P<unit>(?>{_COUNTERS})){_NOT_ASKING}|(?:いくつ|幾つ|いくら|幾ら){_NOT_ASKING}"
    r"(?![^、。？?\sでかにのぐくはがを]{0,8}?(?:ても|でも)(?!ら))|どのくらい|どれくらい|どのぐらい|どれぐらい"
)
"""いくら押しても ("however often I press") asks nothing; いくらで修理してもらえますか asks."""
_ASKS_EN = re.compile(
    r"(?:^|[.!?]\s+|,\s*|\b(?:and|so|roughly|about|approximately|exactly)\s+)"
    r"how (?:many|much|long|often|old|far|heavy|tall|wide|big|large|fast|high|deep|soon)\b"
    r"|(?:^|[.!?]\s+)what (?:year|percentage|temperature|price)\b",
    re.I,
)
_COUNTS = re.compile(r"\bhow many\b|いくつ|幾つ|何(?:個|種類|本|台|枚|点|件)", re.I)
"""Questions a list answers by its length ("Red, blue and green." for how many colours)."""
_SHORT, _LONG = "秒|分|時間|時", "日間|日|週間|週|[かヶケカヵ]月|月|年間|年度|年|世紀"
_KINDS = (_SHORT, _LONG, "人|名", "円")
"""Counters that answer one another: a time, short or long (何時間 by 約90分, 何年度 by 1962年,
but not 何分 by 2024年モデル), people (何人 by 4名), money (何円 by ¥550). Any number answers
another counter (何度 asks a temperature or a count)."""
_NUMBER = re.compile(r"(?<![A-Za-z0-9.,])(?<![A-Za-z][-‐‑–])\d+(?:[.,]\d+)*")
"""A number, not one inside a name ("X4", "KAMADO-5"); one before a unit ("5kg", "2h") counts."""
_KANJI_NUMBER = "[一二三四五六七八九十百千万半数]"
_TIME_WORDS = (
    "翌(?:々|営業)?日|翌[週月年]|当日|即日|本日|今日|明日|明後日|来[週月年]|毎[日週月年]|"
    "永久|無期限|生涯|すぐ|ただちに|直ちに"
)
"""A time without a number (翌営業日に発送, 無期限, すぐに), which answers 何日 as 3日後 does."""
_AMOUNT_WORDS = re.compile(
    r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
    r"fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|"
    r"ninety|hundred|thousand|million|dozen|once|twice|half|several|a few|single|dual|both|none|"
    r"free|no charge|lifetime|unlimited|daily|weekly|monthly|yearly|annually|hourly|tomorrow|today|"
    r"(?:an?|per|each|every|first|second|third) (?:use|second|minute|hour|day|week|month|season|year)s?|"
    r"(?:the )?(?:same|next|following) (?:business )?day|overnight|immediately|instantly)\b"
    rf"|{_KANJI_NUMBER}+(?:{_COUNTERS}|つ)|ひとつ|ふたつ|みっつ|よっつ|いつつ|{_TIME_WORDS}|無料|かかりません",
    re.I,
)
"""An amount in words: a spelled number, "free", "daily", "a lifetime", 三日, 三つ, 翌日, 無料."""


def number_asked(question: str) -> str | None:
    """The unit a question asks a number of ("分" for 何分; "" when it asks for a number without
    naming one: how many, いくら), or None when it does not ask for a number."""
    question = unicodedata.normalize("NFKC", question).strip()
    found = _ASKS_JA.search(question)
    if found:
        return found.group("unit") or ""
    return "" if _ASKS_EN.search(question) else None


def gives_number(text: str, question: str, spelled: bool = True) -> bool:
    """Whether ``text`` answers ``question`` with a number where the question asks for one (any
    text does when it does not). Where the question asks for a time, people or money (何分, 何年,
    何人, 何円), the number must be one of that kind ("約45分", "5営業日"); otherwise any number.
    With ``spelled``, an amount in words answers too, and a list answers how many; without it,
    only digits count ("On one hand" and 十分に are not amounts)."""
    unit = number_asked(question)
    if unit is None:
        return True
    lines = strip_citations(unicodedata.normalize("NFKC", text)).splitlines()
    items = sum(bool(LIST_MARKER.match(line)) for line in lines)
    text = "\n".join(LIST_MARKER.sub("", line) for line in lines)  # list numbers answer nothing
    if spelled and (_AMOUNT_WORDS.search(text) or (_COUNTS.search(question) and _lists(text, items))):
        return True
    # 何時 is a clock's hour, or when (何時まで返品できますか): a time of either length.
    kind = f"{_SHORT}|{_LONG}" if unit == "時" else next((k for k in _KINDS if re.fullmatch(k, unit)), None)
    if kind is None:
        return bool(_NUMBER.search(text))
    # A word may stand between the number and its counter (5営業日, 3稼働日); a short time may
    # be a clock's (10:00), money an amount after its sign (¥550).
    spelled_out = f"|{_KANJI_NUMBER}+" if spelled else ""
    clock = r"|\d{1,2}:\d\d" if "秒" in kind else ""
    sign = r"|[¥$]\s?\d" if kind == "円" else ""
    of_kind = rf"(?:{_NUMBER.pattern}{spelled_out})\s?[\u4e00-\u9fff]{{0,2}}?(?:{kind}){clock}{sign}"
    return bool(re.search(of_kind, text))


def _lists(text: str, items: int) -> bool:
    """Whether ``text`` names several things: list lines, or one sentence of three or more."""
    return items >= 2 or any(
        len(re.findall(r"[,、]|\b(?:and|or)\b|[とや]", s)) >= 2 for s in text.split("\n")
    )
