"""A question analysed once: its language and its terms, computed when it arrives and carried
through retrieval, evidence selection, answering and drafting instead of being recomputed at
every step."""

from __future__ import annotations

from dataclasses import dataclass

from knowledge.lexical import content_terms, index_terms, is_japanese, terms


@dataclass(frozen=True)
class Query:
    text: str
    japanese: bool
    terms: tuple[str, ...]
    """BM25's view of the question (:func:`~knowledge.lexical.index_terms`)."""
    content_terms: tuple[str, ...]
    """The informative terms, each once, in order (what coverage and evidence weigh)."""

    @classmethod
    def of(cls, question: str | Query) -> Query:
        """``question`` analysed (a :class:`Query` is returned as it is)."""
        if isinstance(question, Query):
            return question
        informative = dict.fromkeys(content_terms(terms(question)))
        return cls(question, is_japanese(question), tuple(index_terms(question)), tuple(informative))

    @property
    def lang(self) -> str:
        """``ja`` or ``en``: the language answers and notices are written in."""
        return "ja" if self.japanese else "en"

    def __str__(self) -> str:
        return self.text
