"""What a question asks for, where its words say it: a number. "How many minutes?", 「何分
かかりますか？」 and 「いくらですか？」 are answered by a number (of its kind, where the question
counts a time, people or money), and a sentence without one does not answer them however many
of the question's words it repeats: 「メニューから「白米」を選び、炊飯ボタンを押してください。」
answered 「白米が炊けるまで何分かかりますか？」 at high confidence, beside 「炊き上がりまでの
時間は約45分です。」 in the same paragraph.

The expected answer type is the oldest check in question answering; only the type both
languages mark plainly is checked here: a question opening with how many / how much / how long
/ how often (and a few more), 何 with a counter (何分, 何年度, 何人), いくら, いくつ, どのくらい.
Their other uses ask nothing: 何度も試しましたが, 何日か前に, いくら押しても, いくつか質問が,
"no matter how long I hold it". The check is lenient, as it caps a confidence: an amount in
words ("free", "a lifetime", 無料) answers too.
"""

from __future__ import annotations

import re
import unicodedata

from knowledge.text import LIST_MARKER, strip_citations

_COUNTERS = (
    "時間|日間|週間|年間|年度|世紀|か月|ヶ月|ケ月|カ月|ヵ月|キロ|メートル|センチ|ミリ|グラム|リットル|種類|段階|"
    "パーセント|分|秒|時|日|週|月|年|回|個|人|名|歳|才|円|度|枚|台|本|冊|件|点|杯|倍|割|階|番|号|代|畳|合|%"
)
_NOT_ASKING = r"(?!も|でも|か(?!か))"
"""何度も, 何時でも, 何日か前 (but 何日かかりますか asks)."""
_ASKS_JA = re.compile(
    rf"何(?P<unit>{_COUNTERS}){_NOT_ASKING}|(?:いくつ|幾つ){_NOT_ASKING}"
    r"|(?:いくら|幾ら)(?![^。？?]*(?:ても|でも))|どのくらい|どれくらい|どのぐらい|どれぐらい"
)
_ASKS_EN = re.compile(
    r"(?:^|[.!?]\s+|,\s*|\band\s+)how (?:many|much|long|often|old|far|heavy|tall|wide|big|large|fast|high|deep|soon)\b"
    r"|(?:^|[.!?]\s+)what (?:year|percentage|temperature|price)\b",
    re.I,
)
_KINDS = (
    re.compile("秒|分|時間|時"),
    re.compile("日間|日|週間|週|[かヶケカヵ]月|月|年間|年度|年|世紀"),
    re.compile("人|名"),
    re.compile("円"),
)
"""Counters that answer one another: a time, short or long (何時間 by 約90分, 何年度 by 1962年,
but not 何分 by 2024年モデル), people (何人 by 4名), money (何円 by ¥550). Any number answers
another counter (何度 asks a temperature or a count)."""
_NUMBER = re.compile(r"(?<![A-Za-z0-9.,])(?<![A-Za-z]-)\d+(?:[.,]\d+)*")
"""A number, not one inside a name ("X4", "KAMADO-5"); one before a unit ("5kg", "2h") counts."""
_KANJI_NUMBER = "[一二三四五六七八九十百千万半数]"
_DAYS = "翌(?:営業)?日|当日|即日|毎[日週月年]"
"""A day or a period without a number (翌営業日に発送), which answers 何日 as 3日後 does."""
_AMOUNT_WORDS = re.compile(
    r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|"
    r"forty|fifty|hundred|thousand|dozen|once|twice|half|several|a few|free|no charge|lifetime|"
    r"unlimited|(?:an?|per|each|every) (?:second|minute|hour|day|week|month|season|year)s?|"
    r"(?:the )?(?:same|next) (?:business )?day|overnight|immediately|instantly)\b"
    rf"|{_KANJI_NUMBER}+(?:{_COUNTERS})|{_DAYS}|無料|無期限|永久|かかりません",
    re.I,
)
"""An amount in words: a spelled number, "free", "a lifetime", "the next day", 三日, 翌日, 無料."""


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
    何人, 何円), the number must be one of that kind ("約45分", "5営業日") and not the question's
    own (1863年 does not answer "1863年に約したが、実際に開港したのは何年?"); otherwise any
    number, or an amount in words. With ``spelled`` off, only digits count: "On one hand" and
    十分に are not amounts."""
    lines = strip_citations(unicodedata.normalize("NFKC", text)).splitlines()
    text = "\n".join(LIST_MARKER.sub("", line) for line in lines)  # list numbers answer nothing
    unit = number_asked(question)
    if unit is None:
        return True
    kind = next((kind for kind in _KINDS if kind.fullmatch(unit)), None)
    if kind is None:
        return bool(_NUMBER.search(text)) or (spelled and bool(_AMOUNT_WORDS.search(text)))
    if kind is _KINDS[3] and spelled and _AMOUNT_WORDS.search(text):
        return True  # 無料, "free"
    digits = _NUMBER.pattern
    if spelled and kind is _KINDS[1] and re.search(_DAYS, text):
        return True
    spelled_out = f"|{_KANJI_NUMBER}+" if spelled else ""
    # A word may stand between the number and its counter (5営業日, 3稼働日); a short time may
    # be a clock's (10:00), money an amount after its sign (¥550).
    other = {0: r"|\d{1,2}:\d\d", 3: r"|[¥$]\s?\d"}.get(_KINDS.index(kind), "")
    of_kind = re.compile(rf"(?:{digits}{spelled_out})[\u4e00-\u9fff]{{0,2}}?(?:{kind.pattern}){other}")
    own = {m.group(0) for m in of_kind.finditer(unicodedata.normalize("NFKC", question))}
    return any(m.group(0) not in own for m in of_kind.finditer(text))
