"""An optional reranking stage: a sentence-transformers cross-encoder reads the question and
each candidate passage together and scores how well the passage answers it.

Any cross-encoder from a local folder or the local hub cache works (``TSUMUGI_RERANK_MODEL``);
nothing is downloaded. None ships with Tsumugi, so reranking is off unless one is configured.
"""

from __future__ import annotations

import threading

from knowledge.embed import load_model

_cache: dict[str, Reranker] = {}
_cache_lock = threading.Lock()


class Reranker:
    """A loaded cross-encoder."""

    def __init__(self, name: str, device: str = "cpu") -> None:
        from sentence_transformers import CrossEncoder

        self.name = name
        self.model = load_model("reranking", name, lambda: CrossEncoder(name, device=device))
        self._lock = threading.Lock()

    def scores(self, question: str, passages: list[str]) -> list[float]:
        """One score per passage, higher for a better answer to ``question``."""
        if not passages:
            return []
        with self._lock:  # one forward pass at a time: the model is shared between requests
            values = self.model.predict([(question, p) for p in passages], show_progress_bar=False)
        return [float(v) for v in values.reshape(len(passages), -1)[:, -1]]


def get_reranker(name: str) -> Reranker:
    """A process-wide cached cross-encoder."""
    with _cache_lock:
        if name not in _cache:
            _cache[name] = Reranker(name)
        return _cache[name]
