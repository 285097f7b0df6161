"""Evidence first: the passage sentences that answer a question, and the check that keeps every
sentence a user sees supported by the passage it cites.

A 135M model given a passage that answers the question still invents steps, flips "you can"
into "No", and writes menu paths that exist nowhere. So the answer is built from evidence:

1. **Select.** Every sentence of the retrieved passages is scored against the question by term
   coverage (IDF-weighted share of the question's informative terms it contains) and, when the
   embedder reads the question's language, embedding similarity; the passage's rank adds a
   little. A sentence inside a list or a numbered procedure brings the whole list (and the line
   that introduces it), so steps are never shown half; a neighbour completes a chosen sentence.
2. **Check.** A sentence the model writes is kept only when the passage it cites supports
   it: most of its informative terms occur there, every number, quoted name and menu path
   occurs there verbatim, it does not deny what the closest evidence sentence affirms (or the
   reverse) nor drop the condition that sentence puts on a number it repeats, and, where the
   embedder reads the language, it is close in meaning to a sentence of the passage. An
   unsupported sentence is replaced by the evidence sentence it distorts, or removed.

The rules are few and fixed (no per-corpus weights): ``python -m bench --only answers``
measures them on every development corpus beside the extractive baselines.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from assistant.answering.asks import gives_number
from assistant.answering.bounds import drops_bound, numbers
from knowledge.lexical import content_terms, idf, is_japanese, terms
from knowledge.query import Query
from knowledge.retrieve import Hit
from knowledge.text import CITATION, LIST_MARKER, cite, sentences, strip_citations

SIM_WEIGHT = 0.5
"""Share of a sentence's score from embedding similarity, where measured (the rest: term coverage)."""
NEAR_BEST = 0.8
"""Other sentences join the best one when they score at least this share of its score."""
MAX_UNITS = {"quote": 3, "concise": 2, "detailed": 4}
"""Most evidence units (sentences or whole lists) per answer style."""
MAX_LIST_ITEMS = 10
MAX_LIST_CHARS = 800
"""A list up to this size is quoted whole; from a longer one, only the item that answers."""
MIN_TERM_SUPPORT = 0.75
"""Share of a written sentence's informative terms that must occur in its cited passage."""
MIN_SIMILARITY_SUPPORT = 0.5
"""Cosine similarity to some passage sentence a written sentence needs, where measured."""

_HEADING = re.compile(r"^\s*#{1,6}\s")
_TABLE_RULE = re.compile(r"^\s*\|?[\s:|-]+\|?\s*$")
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_QUOTED = re.compile(r"[\"“'‘「『]([^\"”'’」』]{2,60})[\"”'’」』]")
_MENU_PATH = re.compile(r"[^\s>→»][^>→»\n]{0,40}?(?:\s*[>→»]\s*[^>→»\n.,;]{1,40}){1,6}")
_NEGATION_EN = re.compile(
    r"\b(?:no|not|never|cannot|can't|don't|doesn't|isn't|aren't|won't|wasn't|unable|impossible|nor)\b", re.I
)
_NEGATION_JA = re.compile(r"(?:ません|ない|できず|不可|禁止)")


@dataclass(frozen=True)
class Unit:
    """One piece of evidence: a sentence, or a whole list with its introduction."""

    n: int
    """1-based number of the passage it comes from (its citation)."""
    text: str
    order: int
    """Position within the passage, for putting chosen units back in reading order."""
    score: float
    similarity: float | None
    coverage: float
    is_list: bool = False


@dataclass
class Evidence:
    """The chosen units and the measurements confidence uses."""

    units: list[Unit] = field(default_factory=list)
    best_score: float = 0.0
    best_similarity: float = 0.0
    coverage: float = 0.0
    """IDF-weighted share of the question's informative terms found in the chosen units."""
    read: bool = False
    """Whether the embedder reads the question's language (similarity measured)."""
    weights: dict[str, float] = field(default_factory=dict)
    """The weight of each question term (see :func:`select`)."""

    def quote(self, japanese: bool) -> str:
        """The units as an answer, each cited; lists keep their lines."""
        parts = []
        for unit in self.units:
            if unit.is_list:
                lines = unit.text.splitlines()
                parts.append("\n" + "\n".join(lines[:-1] + [cite(lines[-1], unit.n)]) + "\n")
            else:
                parts.append(cite(unit.text, unit.n))
        text = ("" if japanese else " ").join(parts)
        return re.sub(r"\n{3,}", "\n\n", re.sub(r" *\n *", "\n", text)).strip()


@dataclass
class _Block:
    n: int
    order: int
    lines: list[str]
    is_list: bool


def _blocks(hit_text: str, n: int) -> list[_Block]:
    """A passage as sentences and lists (a list keeps the line that introduces it)."""
    blocks: list[_Block] = []
    order = 0
    for raw in hit_text.splitlines():
        line = raw.strip()
        if not line or _HEADING.match(line) or _TABLE_RULE.match(line):
            continue
        line = line.replace("**", "").replace("__", "")
        if LIST_MARKER.match(line):
            if blocks and blocks[-1].is_list:
                blocks[-1].lines.append(line)
            elif blocks and not blocks[-1].is_list and blocks[-1].lines[-1].endswith((":", "：")):
                blocks[-1] = _Block(n, blocks[-1].order, [blocks[-1].lines[-1], line], True)
            else:
                blocks.append(_Block(n, order, [line], True))
        elif _looks_like_heading(line) and not _states_value(line):
            continue
        else:
            for sentence in sentences(line):
                if len(sentence) >= 6:
                    blocks.append(_Block(n, order, [sentence], False))
                    order += 1
        order += 1
    return blocks


_ENUMERATOR = re.compile(
    r"^(?:\d+[.)](?!\d)|(?:step|part|section|chapter|appendix)\s*\d+\b|(?:第|手順)\s*\d+)", re.I
)
_LABELLED = re.compile(r"^[^:：]{1,40}[:：]\s*\S")
_NUMBER_VALUE = re.compile(r"(?<![^\W\d_])(?<![^\W\d_]-)[$€£¥]?\d")
"""A number standing alone ("12 lbs", "$250"), not one inside a name ("X4", "Q1", "KAMADO-5")."""
_LATIN_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")


def _looks_like_heading(line: str, written: bool = False) -> bool:
    """A short line with no sentence end (a title in the passage text). A Latin word (a model
    name) counts as one character of a document's Japanese line, not of a line the model wrote."""
    if line.endswith(tuple(".!?。！？:：")):
        return False
    short = len(line if written else _LATIN_WORD.sub("W", line)) <= 16
    return short if is_japanese(line) else len(line.split()) <= 6


def _states_value(line: str) -> bool:
    """A short line that states a value is a fact, not a title: a number past any leading
    "3." or "Step 2:" ("Weight: 12 lbs", "TrailMaster X4 Tent, price $250,"), or a label with
    its value ("Waterproof: Yes"). Taken for titles, spec sheets never answered "What does it
    cost?"; the reviews that name the product were quoted instead."""
    line = unicodedata.normalize("NFKC", line).strip()
    rest = _ENUMERATOR.sub("", line, count=1).lstrip()
    return bool(_NUMBER_VALUE.search(rest) or _LABELLED.match(rest))


def _weighted_coverage(question_terms: list[str], idf: dict[str, float], text_terms: set[str]) -> float:
    total = sum(idf.get(t, 1.0) for t in question_terms)
    if not total:
        return 0.0
    return sum(idf.get(t, 1.0) for t in question_terms if t in text_terms) / total


def answer_coverage(text: str, evidence: Evidence) -> float:
    """Weighted share of the question's informative terms that ``text`` contains (the
    weights :func:`select` gave them)."""
    return _weighted_coverage(list(evidence.weights), evidence.weights, set(terms(text)))


def term_weights(kb, question_terms: list[str]) -> dict[str, float]:
    """IDF of each question term in ``kb`` (a term the documents never use weighs most)."""
    if kb is None or not question_terms:
        return {}
    count, df = kb.term_stats(question_terms)
    count = max(1, count)
    return {t: idf(count, df.get(t, 0)) for t in question_terms}


def select(
    question: str | Query,
    hits: list[Hit],
    embedder=None,
    corpus_idf: dict[str, float] | None = None,
    max_units: int = 3,
) -> Evidence:
    """The evidence for ``question`` in ``hits``: best unit first chosen, then those near it.

    A question term weighs by its IDF in the knowledge base times its IDF among the candidate
    sentences: the product name that every retrieved passage repeats tells the sentences apart
    no better than "the", while the term only the answering sentence holds ("waistband",
    "boil", 主峰) tells them apart best.
    """
    question = Query.of(question)
    q_terms = list(question.content_terms)
    blocks = [b for n, hit in enumerate(hits, start=1) for b in _blocks(hit.text, n)]
    if not blocks:
        return Evidence()
    # Score each sentence and each list item; a list scores as its best line.
    lines = [(i, line) for i, b in enumerate(blocks) for line in b.lines]
    line_terms = [set(terms(line)) for _, line in lines]
    count = len(lines)
    weights = {}
    for t in q_terms:
        df = sum(t in lt for lt in line_terms)
        weights[t] = (corpus_idf or {}).get(t, 1.0) * idf(count, df)
    read = embedder is not None and embedder.reads(question.text)
    similarity = None
    if read:
        vectors = embedder.encode_cached([question.text] + [LIST_MARKER.sub("", line) for _, line in lines])
        similarity = vectors[1:] @ vectors[0]
    best_line: dict[int, tuple[float, float | None, float, str]] = {}
    for k, (i, line) in enumerate(lines):
        coverage = _weighted_coverage(q_terms, weights, line_terms[k])
        sim = float(similarity[k]) if similarity is not None else None
        score = coverage if sim is None else (1 - SIM_WEIGHT) * coverage + SIM_WEIGHT * max(0.0, sim)
        score += 0.05 / blocks[i].n  # the higher-ranked passage wins a tie
        if i not in best_line or score > best_line[i][0]:
            best_line[i] = (score, sim, coverage, line)
    # A question in the documents (an FAQ's) is not an answer: the sentence after it is, and it
    # takes the question's score when that is higher.
    asks = [all(line.rstrip().endswith(("?", "？")) for line in b.lines) for b in blocks]
    for i, b in enumerate(blocks):
        following = i + 1
        if asks[i] and following < len(blocks) and blocks[following].n == b.n and not asks[following]:
            if best_line[i][0] > best_line[following][0]:
                best_line[following] = (*best_line[i][:3], best_line[following][3])
    units = {}
    for i, b in enumerate(blocks):
        if asks[i]:
            continue
        score, sim, coverage, line = best_line[i]
        units[i] = Unit(b.n, _unit_text(b, line), b.order, score, sim, coverage, b.is_list)
    if not units:
        return Evidence()
    ranked = sorted(units.values(), key=lambda u: -u.score)
    best = ranked[0]
    chosen = [best]
    for unit in ranked[1:]:
        if len(chosen) >= max_units or unit.score < NEAR_BEST * best.score:
            break
        chosen.append(unit)
    chosen += _other_sides(chosen, units, question.text)
    chosen_terms = set(t for u in chosen for t in terms(u.text))
    return Evidence(
        units=sorted(chosen, key=lambda u: (u.n, u.order)),
        best_score=best.score,
        best_similarity=best.similarity or 0.0,
        coverage=_weighted_coverage(q_terms, weights, chosen_terms),
        read=read,
        weights=weights,
    )


_INSTRUCTION_JA = re.compile(r"(?:ください|下さい)[。！!]?$")


def _other_sides(chosen: list[Unit], units: dict[int, Unit], question: str) -> list[Unit]:
    """The sentences next to a chosen one, in the same paragraph, that complete it: the number a
    question asks for, in digits, that the chosen do not give (:mod:`assistant.answering.asks`), one bounding
    the same number, the threshold's other side ("Orders of 5,000 yen or more ship free." alone
    answered "What does shipping cost on a 3,000 yen order?" as if it were free; the next
    sentence says orders under 5,000 yen pay 550), and the instruction after a Japanese
    statement, what to do about it (「「E01」が出た場合は、内釜が正しくセットされていません。」
    was the whole answer to 「どうすればいいですか？」; 「一度取り出してからセットし直して
    ください。」 follows it). English marks no instruction that a rule could tell."""
    found = []
    index = {(u.n, u.order): i for i, u in units.items()}
    unanswered = not any(gives_number(u.text, question) for u in chosen)
    for unit in chosen:
        i = index.get((unit.n, unit.order))
        if i is None or unit.is_list:
            continue
        bounds = numbers(unit.text, bounded=True)
        states = not _INSTRUCTION_JA.search(unit.text)
        for step in (-1, 1):
            other = units.get(i + step)
            if (
                other is not None
                and not other.is_list
                and other.n == unit.n
                and other.order == unit.order + step  # a sentence of the same line
                and other not in chosen
                and other not in found
                and (
                    bounds & numbers(other.text, bounded=True)
                    or (step == 1 and states and _INSTRUCTION_JA.search(other.text))
                    or (unanswered and gives_number(other.text, question, spelled=False))
                )
            ):
                found.append(other)
    return found


def _unit_text(block: _Block, best_line: str) -> str:
    """A sentence; a short list whole (a procedure's steps stay together); from a long list,
    its introduction and the best item."""
    if not block.is_list:
        return block.lines[0]
    items = block.lines
    if len(items) <= MAX_LIST_ITEMS and sum(len(x) for x in items) <= MAX_LIST_CHARS:
        return "\n".join(items)
    intro = [items[0]] if not LIST_MARKER.match(items[0]) and items[0] != best_line else []
    return "\n".join(intro + [best_line])


# -- the support check ----------------------------------------------------------------------


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).replace("**", "").replace("__", "")
    return re.sub(r"\s+", " ", text).lower()


def _negated(text: str) -> bool:
    return bool(_NEGATION_JA.search(text) if is_japanese(text) else _NEGATION_EN.search(text))


def must_appear(sentence: str) -> list[str]:
    """Numbers, quoted names and menu-path steps of ``sentence``: each must occur in the evidence."""
    plain = CITATION.sub("", sentence)
    found = [m.group(0) for m in _NUMBER.finditer(plain)]
    found += [m.group(1).strip() for m in _QUOTED.finditer(plain)]
    for m in _MENU_PATH.finditer(plain):
        found += [p.strip(" '\"“”") for p in re.split(r"\s*[>→»]\s*", m.group(0))][1:]
    return [f for f in found if f]


def supported(sentence: str, passage: str, embedder=None) -> bool:
    """Whether ``passage`` supports ``sentence`` (see the module docstring for the rules)."""
    plain = CITATION.sub("", sentence).strip()
    # Japanese particles and endings count too: a garbled string of the passage's nouns
    # ("カード会社はどこではくらく") shares them but not the words between them.
    words = set(terms(plain) if is_japanese(plain) else content_terms(terms(plain)))
    if not words:
        return True  # nothing to check ("Yes.", a list marker)
    passage_terms = set(terms(passage, keep_stopwords=True))
    if len(words & passage_terms) / len(words) < MIN_TERM_SUPPORT:
        return False
    flat = _norm(passage)
    if any(_norm(item) not in flat for item in must_appear(plain)):
        return False
    candidates = [s for s in sentences(passage) if len(s) >= 4] or [passage]
    overlap = [len(words & set(terms(s))) for s in candidates]
    closest = candidates[int(np.argmax(overlap))]
    if _negated(plain) != _negated(closest):
        return False
    if drops_bound(plain, closest):
        return False
    if embedder is not None and embedder.reads(plain):
        vectors = embedder.encode_cached([plain] + candidates)
        if float(np.max(vectors[1:] @ vectors[0])) < MIN_SIMILARITY_SUPPORT:
            return False
    return True


def closest_unit(sentence: str, evidence: Evidence) -> Unit | None:
    """The evidence unit sharing at least half of ``sentence``'s informative terms, if any."""
    words = set(content_terms(terms(CITATION.sub("", sentence))))
    if not words or not evidence.units:
        return None
    shares = [len(words & set(terms(u.text))) / len(words) for u in evidence.units]
    k = int(np.argmax(shares))
    return evidence.units[k] if shares[k] >= 0.5 else None


def best_passage(sentence: str, hits: list[Hit]) -> int:
    """1-based number of the passage sharing most informative terms with ``sentence``."""
    words = set(content_terms(terms(sentence)))
    overlap = [len(words & set(terms(h.text))) for h in hits]
    return int(np.argmax(overlap)) + 1 if hits else 0


@dataclass
class Checked:
    """A written answer after the support check."""

    sentences: list[tuple[str, bool]] = field(default_factory=list)
    """(sentence with its citation, quoted from the evidence) in order."""
    written: int = 0
    """Sentences the model wrote (those with informative words)."""
    kept: int = 0
    """Of those, the ones the check kept as written."""
    replaced: int = 0
    removed: int = 0


def _key(text: str) -> str:
    return re.sub(r"\W+", " ", strip_citations(text)).strip().lower()


class SupportCheck:
    """Checks the model's sentences one at a time, as they finish streaming."""

    def __init__(self, hits: list[Hit], evidence: Evidence, embedder=None) -> None:
        self.hits, self.evidence, self.embedder = hits, evidence, embedder
        self.result = Checked()
        self._seen: set[str] = set()

    def add(self, sentence: str) -> None:
        sentence = sentence.strip()
        marker_match = LIST_MARKER.match(sentence)
        marker = marker_match.group(0).strip() if marker_match else ""
        plain = re.sub(r"\s+", " ", strip_citations(sentence[marker_match.end() if marker_match else 0 :]))
        key = _key(plain)
        if not key or key in self._seen:
            return
        self._seen.add(key)
        numbers = [n for n in (int(m) for m in CITATION.findall(sentence)) if 1 <= n <= len(self.hits)]
        if not content_terms(terms(plain)) or self._echo(plain):
            return  # a bare "Yes.", a heading or the passage's label says nothing to keep
        self.result.written += 1
        cited = numbers or [best_passage(plain, self.hits)]
        for n in cited:
            if supported(plain, self.hits[n - 1].text, self.embedder):
                self.result.kept += 1
                if not any(key in _key(shown) for shown, quoted in self.result.sentences if quoted):
                    if not marker and not re.search(r"[.!?。！？:：]$", plain):
                        plain += "。" if is_japanese(plain) else "."
                    self.result.sentences.append(
                        (("\n" + marker + " " if marker else "") + cite(plain, n), False)
                    )
                return
        unit = closest_unit(plain, self.evidence)
        if unit is not None and _key(unit.text) not in self._seen:
            self._seen.add(_key(unit.text))
            self.result.replaced += 1
            self.result.sentences.append((Evidence([unit]).quote(is_japanese(unit.text)), True))
        else:
            self.result.removed += 1

    def _echo(self, plain: str) -> bool:
        """The passage's label ("(guide.md, Battery)") or a bare heading the model copied."""
        if any(hit.doc and hit.doc in plain for hit in self.hits):
            return True
        return not re.search(r"[.!?。！？]$", plain) and _looks_like_heading(plain, written=True)

    def text(self, japanese: bool) -> str:
        joined = ("" if japanese else " ").join(s for s, _ in self.result.sentences)
        return re.sub(r" *\n *", "\n", joined).strip()
