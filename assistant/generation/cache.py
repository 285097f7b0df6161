"""The process-wide cache of loaded chat models, shared by every user of one server."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

from assistant.generation.config import ModelConfig
from assistant.generation.local import ChatModel

MAX_LOADED_MODELS = 3
"""Base models held at once (one model at three precisions, say), each with every adapter
asked of it; the least recently used goes when a fourth is loaded."""

_models: dict[tuple[ModelConfig, str], ChatModel] = {}
_models_lock = threading.Lock()
"""Guards ``_models`` only, never a load: one user's load does not block another's answer."""
_loading: dict[tuple[ModelConfig, str], threading.Lock] = {}
"""One lock per configuration being loaded, so two users asking for it load it once."""


def load_chat_model(config: ModelConfig, cache_dir: Path) -> ChatModel:
    """A process-wide cached model per configuration (name, precision, device); an adapter
    is loaded into its base model's copy, so the base and its adapters share one batch.

    One user's choice never changes what another gets: choosing another precision loads that
    variant beside the one others use; only the least recently used model beyond
    :data:`MAX_LOADED_MODELS` is dropped (anyone still answering with it keeps it until done).
    """
    if config.adapter:
        base = load_chat_model(replace(config, adapter=""), cache_dir)
        return base.adapted(config.adapter)  # one that does not fit leaves the base as it was
    key = (config, str(cache_dir))
    with _models_lock:
        if key in _models:
            _models[key] = _models.pop(key)  # most recently used last
            return _models[key]
        loading = _loading.setdefault(key, threading.Lock())
    with loading:
        with _models_lock:
            if key in _models:
                return _models[key]
        model = ChatModel(config, Path(cache_dir))
        with _models_lock:
            while len(_models) >= MAX_LOADED_MODELS:
                del _models[next(iter(_models))]  # the least recently used
            _models[key] = model
            _loading.pop(key, None)
        return model


def loaded_models() -> list[ChatModel]:
    """The models held now, least recently used first (for the status page)."""
    with _models_lock:
        return list(_models.values())


def forget_models(adapter_dir: str | Path | None = None) -> None:
    """Drop every cached model, or (``adapter_dir``: an adapter deleted or renamed) take that
    adapter out of the base models holding it, which stay loaded for everyone else. Whoever
    still answers with a dropped model keeps it until done."""
    with _models_lock:
        if adapter_dir is None:
            _models.clear()
            return
        holding = [m for m in _models.values() if str(adapter_dir) in m.batcher.adapters]
    for model in holding:
        model.batcher.unload_adapter(str(adapter_dir))
