"""What every way of generating a reply implements: the local model and a remote server alike.

Answering, drafting, decomposition and evaluation take any :class:`ChatBackend`; nothing
above this package knows whether the tokens come from transformers in this process or from
an OpenAI-compatible server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from knowledge.errors import TsumugiError


class ModelError(TsumugiError):
    """A model could not be loaded or run; the message says what to do."""


@runtime_checkable
class ChatBackend(Protocol):
    """Something that answers chat messages, streaming."""

    @property
    def label(self) -> str:
        """How the model is named to users (name, adapter, precision or endpoint)."""
        ...

    def stream(
        self,
        messages: list[dict],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: threading.Event | None = None,
        info: dict | None = None,
    ) -> Iterator[str]:
        """Yield pieces of the reply as they come (greedy when ``temperature`` is 0).

        ``stop``, once set, ends the reply at the next piece. ``info``, when given, receives
        ``prompt_tokens``, ``new_tokens`` and ``token_logprobs`` where the backend knows them
        (an empty ``token_logprobs`` means the backend gave none). Failures raise
        :class:`ModelError` with one sentence saying what to do.
        """
        ...
