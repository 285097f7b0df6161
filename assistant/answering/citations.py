"""Citation repair for text a model wrote: marks that point nowhere, uncited sentences,
marks after the full stop, and sentences said twice. The citation pattern itself is
:data:`knowledge.text.CITATION`."""

from __future__ import annotations

import re

from assistant.generation.loops import sentence_key
from knowledge.lexical import is_japanese, terms
from knowledge.retrieve import Hit
from knowledge.text import CITATION as _CITATION
from knowledge.text import LIST_MARKER, cite, sentences, split_sentences


def fix_citations(text: str, hits: list[Hit]) -> str:
    """Drop citation marks that point at no passage; attribute uncited sentences.

    Small models often forget to cite, or cite a number that was never given. Marks outside
    1..len(hits) are removed. A sentence without a mark gets one for the passage that shares
    the most informative words with it, when that passage supports at least half of them.
    """
    text = re.sub(
        r"\s*" + _CITATION.pattern,
        lambda m: m.group(0) if 1 <= int(m.group(1)) <= len(hits) else "",
        text,
    )
    if not hits:
        return text
    passage_terms = [set(terms(h.text)) for h in hits]
    out = []
    for sentence, sep in split_sentences(text):
        words = set(terms(sentence))
        if not _CITATION.search(sentence) and len(words) >= 2:
            overlap = [len(words & p) / len(words) for p in passage_terms]
            best = max(range(len(hits)), key=lambda i: overlap[i])
            if overlap[best] >= 0.5:
                sentence = cite(sentence, best + 1)
        out.append(sep + sentence)
    return "".join(out).strip()


def drop_repeats(text: str) -> str:
    """Remove sentences the model already said and a loop at the end, keeping the layout.

    A list item whose every sentence is a repeat goes with its marker.
    """
    seen: set[str] = set()
    lines = []
    for line in text.splitlines():
        marker_match = LIST_MARKER.match(line)
        marker = marker_match.group(0) if marker_match else ""
        kept = []
        for sentence in sentences(line[len(marker) :]):
            key = sentence_key(sentence)
            if key in seen:
                continue
            if key:
                seen.add(key)
            kept.append(sentence)
        body = ("" if is_japanese(line) else " ").join(k for k in kept if k)
        if body.strip() or not line.strip():
            lines.append(marker + body)
    cleaned = "\n".join(lines)
    # A loop of a short unit ("12x12x12x...") is cut back to one occurrence.
    cleaned = re.sub(r"(.{1,20}?)\1{3,}\S*", r"\1", cleaned)
    return re.sub(r"\n{3,}", "\n\n", cleaned).strip()


_MARK_AFTER_END = re.compile(r"([.!?。！？])[ \t]*((?:" + _CITATION.pattern + r"[ \t]*)+)")


def marks_before_end(text: str) -> str:
    """ "It lasts two years. [1] It is red." → "It lasts two years [1]. It is red.": a mark
    written after the full stop belongs to the sentence before it."""
    return _MARK_AFTER_END.sub(lambda m: f" {m.group(2).strip()}{m.group(1)} ", text)
