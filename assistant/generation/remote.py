"""The remote backend: any OpenAI-compatible server (vLLM, TGI, llama.cpp, Ollama, OpenAI)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

from assistant.generation.backend import ModelError
from knowledge.errors import ConfigError


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

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"The {self.role}'s URL should start with http:// or https://, got {self.base_url!r}."
            )
        if not self.model:
            raise ConfigError(
                f"The {self.role} at {self.base_url} needs a model name too ({self.model_setting})."
            )


def chat_endpoint(base_url: str, model: str, api_key: str = "") -> Endpoint:
    """The main chat model served elsewhere (TSUMUGI_CHAT_URL, TSUMUGI_CHAT_MODEL, TSUMUGI_CHAT_KEY)."""
    return Endpoint(
        base_url.rstrip("/"),
        model,
        api_key,
        key_setting="TSUMUGI_CHAT_KEY",
        model_setting="TSUMUGI_CHAT_MODEL",
        role="chat model",
        label_note="remote",
    )


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
        self.extras = {"logprobs": True, "stream_options": {"include_usage": True}}
        """Asked for until the server refuses one by name (then never again)."""

    @property
    def label(self) -> str:
        return f"{self.config.model} ({self.config.label_note})"

    def _request(self, messages, max_new_tokens, temperature):
        """Start a streamed completion, asking for log-probabilities and token counts; a
        server that refuses one of them by name is asked again without it."""
        import openai

        kwargs = dict(
            model=self.config.model,
            messages=messages,
            max_tokens=max_new_tokens,
            temperature=temperature,
            stream=True,
        )
        while True:
            try:
                return self.client.chat.completions.create(**kwargs, **self.extras)
            except openai.BadRequestError as exc:
                refused = [name for name in self.extras if name in str(exc)]
                if not refused:
                    raise
                for name in refused:
                    del self.extras[name]

    def stream(
        self,
        messages: list[dict],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: threading.Event | None = None,
        info: dict | None = None,
    ) -> Iterator[str]:
        """Stream from the server. ``info`` gets the server's token counts where it sends them,
        and ``token_logprobs`` (empty: the server returned none, ``logprobs`` False)."""
        import httpx
        import openai

        info = {} if info is None else info
        info.update(token_logprobs=[], logprobs=False, backend="remote")
        received = 0
        try:
            response = self._request(messages, max_new_tokens, temperature)
            with response:
                for chunk in response:
                    if stop is not None and stop.is_set():
                        break
                    if chunk.usage is not None:
                        info.update(
                            prompt_tokens=chunk.usage.prompt_tokens, new_tokens=chunk.usage.completion_tokens
                        )
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    if choice.logprobs is not None and choice.logprobs.content:
                        info["token_logprobs"].extend(t.logprob for t in choice.logprobs.content)
                        info["logprobs"] = True
                    if choice.delta.content:
                        received += 1
                        yield choice.delta.content
        except openai.AuthenticationError as exc:
            raise ModelError(
                f"The {self.config.role} at {self.config.base_url} refused the API key; check {self.config.key_setting}."
            ) from exc
        except openai.NotFoundError as exc:
            raise ModelError(
                f"The {self.config.role} {self.config.model!r} is not served at {self.config.base_url}; "
                f"check {self.config.model_setting}."
            ) from exc
        except (openai.APIError, httpx.HTTPError) as exc:
            when = "stopped in the middle of the answer" if received else "did not answer"
            raise ModelError(
                f"The {self.config.role} at {self.config.base_url} {when} ({exc.__class__.__name__}); "
                "ask again, or check the server."
            ) from exc


_remote: dict[Endpoint, RemoteModel] = {}


def remote_model(config: Endpoint) -> RemoteModel:
    if config not in _remote:
        _remote[config] = RemoteModel(config)
    return _remote[config]
