"""The remote backend: any OpenAI-compatible server (vLLM, TGI, llama.cpp, Ollama, OpenAI)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

from assistant.generation.backend import ModelError


@dataclass(frozen=True)
class Endpoint:
    """Where a remote model is served. The key comes from the environment, never from disk."""

    base_url: str
    model: str
    api_key: str = ""
    timeout_s: float = 120.0
    key_setting: str = "TSUMUGI_ESCALATE_KEY"
    """The setting that holds the key, named when the server refuses it."""
    model_setting: str = "TSUMUGI_ESCALATE_MODEL"
    """The setting that names the model, named when the server does not serve it."""
    role: str = "larger model"
    """How this endpoint is called in error messages."""
    label_note: str = "escalated"
    """Shown after the model's name wherever the answer's model is named."""


class RemoteModel:
    """A model behind an OpenAI-compatible endpoint; a :class:`~assistant.generation.backend.ChatBackend`."""

    def __init__(self, config: Endpoint) -> None:
        from openai import OpenAI

        self.config = config
        # A local server without keys still needs a non-empty string for the client.
        self.client = OpenAI(
            base_url=config.base_url,
            api_key=config.api_key or "none",
            timeout=config.timeout_s,
            max_retries=1,
        )

    @property
    def label(self) -> str:
        return f"{self.config.model} ({self.config.label_note})"

    def stream(
        self,
        messages: list[dict],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: threading.Event | None = None,
        info: dict | None = None,
    ) -> Iterator[str]:
        import openai

        try:
            response = self.client.chat.completions.create(
                model=self.config.model,
                messages=messages,
                max_tokens=max_new_tokens,
                temperature=temperature,
                stream=True,
            )
            with response:
                for chunk in response:
                    if stop is not None and stop.is_set():
                        break
                    if chunk.choices and chunk.choices[0].delta.content:
                        yield chunk.choices[0].delta.content
        except openai.AuthenticationError as exc:
            raise ModelError(
                f"The {self.config.role} at {self.config.base_url} refused the API key; check {self.config.key_setting}."
            ) from exc
        except openai.NotFoundError as exc:
            raise ModelError(
                f"The {self.config.role} {self.config.model!r} is not served at {self.config.base_url}; "
                f"check {self.config.model_setting}."
            ) from exc
        except openai.APIError as exc:
            raise ModelError(
                f"The {self.config.role} at {self.config.base_url} did not answer ({exc.__class__.__name__})."
            ) from exc


_remote: dict[Endpoint, RemoteModel] = {}


def remote_model(config: Endpoint) -> RemoteModel:
    if config not in _remote:
        _remote[config] = RemoteModel(config)
    return _remote[config]
