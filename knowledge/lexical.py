"""Terms for English and Japanese alike.

Latin words are lower-cased and NFKC-normalised. Japanese has no spaces, so runs of kanji,
katakana and hiragana become overlapping character bigrams within each script run (a run of
one character stays a unigram): the standard CJK approach that needs no dictionary, works for
unknown product names, and does not create junk terms across script boundaries such as
particle + noun. These :func:`terms` are what coverage and evidence checks compare.

BM25 indexes more (:func:`index_terms`): for Japanese, also the bigrams that cross a script
boundary inside a Japanese run (a verb stem 生ま, a compound ドイツ語's ツ語) and the words of a
morphological analysis (SudachiPy with its core dictionary, normalised forms, particles and
auxiliaries left out), which also folds spelling variants such as ﾊﾟｿｺﾝ / パソコン. Measured in
``bench/results/retrieval_quality.md`` against bigrams alone.
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata

_WORD = re.compile(
    r"[a-z0-9]+(?:['’][a-z]+)?|[\u4e00-\u9fff\u3400-\u4dbf々〆]+|[\u30a0-\u30ffー]+|[\u3040-\u309f]+|[^\W_]+"
)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff々〆ー]")

# Words so common in English questions that they only add noise to term matching.
STOPWORDS = frozenset(
    """a an and are as at be but by can could did do does for from had has have how i if in into
    is it its me my no not of on or our so that the their them then there these they this to
    was we what when where which who why will with would you your""".split()
)


def terms(text: str, keep_stopwords: bool = False) -> list[str]:
    """Split ``text`` into index terms (words, CJK bigrams)."""
    text = unicodedata.normalize("NFKC", text).lower()
    out: list[str] = []
    for match in _WORD.finditer(text):
        word = match.group(0)
        if _CJK.match(word):
            if len(word) == 1:
                out.append(word)
            else:
                out.extend(word[i : i + 2] for i in range(len(word) - 1))
        elif keep_stopwords or word not in STOPWORDS:
            out.append(word.replace("’", "'"))
    return out


TERMS_VERSION = 2
"""Bumped when :func:`index_terms` changes; knowledge bases indexed before re-index on opening."""

_JAPANESE_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff々〆ー]{2,}")
_SKIPPED_POS = frozenset({"助詞", "助動詞", "補助記号", "空白", "記号"})
_analysers = threading.local()


def _script(char: str) -> str:
    if "\u3040" <= char <= "\u309f":
        return "hiragana"
    if "\u30a0" <= char <= "\u30ff" or char == "ー":
        return "katakana"
    return "kanji"


def _analyser():
    """This thread's SudachiPy tokenizer (core dictionary, shortest words); one is not shared
    between threads."""
    analyser = getattr(_analysers, "tokenizer", None)
    if analyser is None:
        from sudachipy import Dictionary, SplitMode

        analyser = _analysers.tokenizer = Dictionary(dict="core").tokenizer(SplitMode.A)
    return analyser


def _words(run: str) -> list[str]:
    """Dictionary words of a Japanese run (normalised forms), without particles and symbols."""
    return [
        m.normalized_form().lower()
        for m in _analyser().tokenize(run)
        if m.part_of_speech()[0] not in _SKIPPED_POS
    ]


def japanese_name(text: str) -> bool:
    """Whether ``text`` is a Japanese person's name by the dictionary: a family name, with or
    without a given name (山田太郎, 佐々木, 高橋 まゆみ); not 以上, 東京 or a given name alone.
    A line longer than any name is none (and SudachiPy refuses input of some 49 KB)."""
    if len(text.strip()) > 40:
        return False
    words = [
        m.part_of_speech() for m in _analyser().tokenize(text.strip()) if m.part_of_speech()[0] != "空白"
    ]
    return (
        bool(words) and all(pos[:3] == ("名詞", "固有名詞", "人名") for pos in words) and words[0][3] == "姓"
    )


def index_terms(text: str) -> list[str]:
    """What BM25 indexes and searches: :func:`terms`, and for Japanese runs also the bigrams
    across script boundaries and the dictionary words."""
    out = terms(text)
    for match in _JAPANESE_RUN.finditer(unicodedata.normalize("NFKC", text).lower()):
        run = match.group(0)
        out.extend(a + b for a, b in zip(run, run[1:]) if _script(a) != _script(b))
        out.extend(_words(run))
    return out


def is_japanese(text: str) -> bool:
    """True when a good share of the letters in ``text`` are Japanese."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    return sum(1 for c in letters if _CJK.match(c)) >= 0.3 * len(letters)


def idf(count: int, df: int) -> float:
    """BM25's inverse document frequency of a term found in ``df`` of ``count`` texts (always
    positive; a term found nowhere weighs most)."""
    return math.log(1 + (count - df + 0.5) / (df + 0.5))


_HIRAGANA_ONLY = re.compile(r"^[\u3040-\u309f]+$")


_MODALS = frozenset({"should", "shall", "must", "may", "might"})
"""English modal verbs the stopwords do not hold (they hold can, could, will, would)."""

_INTERROGATIVE = re.compile(r"[何誰]|^幾$")
"""Japanese question words among the terms: what English's stopwords what, who and how are. A
term holding 何 or 誰 is one joined to its neighbour (明治何年: 治何, 何年); 幾 is one only alone
(幾ら, 幾つ), as a name holds it too (幾田). The hiragana ones (いつ, どこ, どう) are left out as
hiragana."""


def content_terms(term_list: list[str]) -> list[str]:
    """Terms that carry meaning: hiragana-only terms are mostly particles and inflections, a
    modal verb says nothing of the subject ('What should I do?' names nothing), and a Japanese
    question word asks rather than names (返品は何日以内: 何日 is in no passage, and weighed as
    the rarest term it outweighed 返品 and 以内 in a passage holding both).

    They stay in the BM25 index (IDF keeps them harmless there) but are left out when
    judging whether a passage covers a question.
    """
    return [
        t
        for t in term_list
        if not _HIRAGANA_ONLY.match(t) and t not in _MODALS and not _INTERROGATIVE.search(t)
    ]


def distinctive_terms(term_list: list[str]) -> list[str]:
    """Terms that can show a passage is about a question: single Japanese characters (作, 方,
    高) are left out when longer terms remain, since one kanji occurs in many unrelated words
    (ラーメンの作り方 would be "covered" by any long passage holding 作 and 方)."""
    longer = [t for t in term_list if not (len(t) == 1 and _CJK.match(t))]
    return longer or term_list
