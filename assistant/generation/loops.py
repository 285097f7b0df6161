"""Loop heuristics: a small model under greedy decoding repeats itself, and is cut off."""

from __future__ import annotations

import re

from knowledge.text import sentences


def is_looping(ids: list[int], min_span: int = 12, repeats: int = 3) -> bool:
    """True when the tail of ``ids`` is one block of tokens repeated ``repeats`` times.

    Small models fall into loops ("12x12x12x...", or the same sentence again and again)
    under greedy decoding. A repetition penalty would also punish copying from the
    passages, which grounded answers must do, so loops are cut instead.
    """
    n = len(ids)
    for period in range(1, 41):
        span = period * repeats
        if span < min_span:
            continue
        if span > n:
            break
        tail = ids[n - span :]
        if all(tail[i] == tail[i % period] for i in range(span)):
            return True
    return False


def sentence_key(sentence: str) -> str:
    """A sentence reduced to its words, without list numbering, for spotting repeats."""
    return re.sub(r"^\s*\d+[.)]\s*|\W+", " ", sentence).strip().lower()


def repeats_sentence(text: str, min_words: int = 4) -> bool:
    """True when the last finished sentence of ``text`` already appeared earlier."""
    parts = sentences(text)
    if len(parts) < 3:
        return False
    finished = parts[:-1]  # the last part may still be growing
    last = sentence_key(finished[-1])
    if len(last.split()) < min_words and len(last) < 12:
        return False
    return last in {sentence_key(p) for p in finished[:-1]}
