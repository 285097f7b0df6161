"""Escalation: a larger model behind any OpenAI-compatible endpoint answers what the small
model is unsure of, from the same passages.

The endpoint comes from settings (TSUMUGI_ESCALATE_URL, TSUMUGI_ESCALATE_MODEL,
TSUMUGI_ESCALATE_KEY, or OPENAI_API_KEY). Nothing is sent anywhere unless it is set.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

from assistant.confidence import DEFAULT_THRESHOLD
from assistant.models import ModelError
from knowledge.errors import ConfigError


@dataclass(frozen=True)
class EscalationConfig:
    base_url: str = ""
    """Base URL of the endpoint, e.g. https://api.openai.com/v1 ("" switches escalation off)."""
    model: str = ""
    """Model name at that endpoint."""
    api_key: str = ""
    """Key sent as a bearer token (never shown in the UI or logs)."""
    threshold: float = DEFAULT_THRESHOLD
    """Answers with a confidence below this go to the larger model (or are marked for review)."""
    timeout_s: float = 120.0
    """How long to wait for the larger model before keeping the small model's answer."""

    def __post_init__(self) -> None:
        problems = []
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            problems.append(
                f"The escalation URL should start with http:// or https://, got {self.base_url!r}."
            )
        if self.base_url and not self.model:
            problems.append("An escalation URL needs a model name too (TSUMUGI_ESCALATE_MODEL).")
        if not 0 <= self.threshold <= 1:
            problems.append(f"The confidence threshold should be between 0 and 1, got {self.threshold}.")
        if self.timeout_s <= 0:
            problems.append(f"The escalation timeout should be positive, got {self.timeout_s}.")
        if problems:
            raise ConfigError(" ".join(problems))

    @property
    def enabled(self) -> bool:
        return bool(self.base_url)

    def describe(self) -> str:
        """One line for the UI, without the key."""
        if not self.enabled:
            return (
                f"No larger model configured: answers below confidence {self.threshold:.2f} "
                "are marked “needs review”."
            )
        return f"Answers below confidence {self.threshold:.2f} go to `{self.model}` at {self.base_url}."


class RemoteModel:
    """The larger model, streaming like :class:`assistant.models.ChatModel`."""

    def __init__(self, config: EscalationConfig) -> None:
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
        return f"{self.config.model} (escalated)"

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
                f"The larger model at {self.config.base_url} refused the API key; check TSUMUGI_ESCALATE_KEY."
            ) from exc
        except openai.NotFoundError as exc:
            raise ModelError(
                f"The larger model {self.config.model!r} is not served at {self.config.base_url}; "
                "check TSUMUGI_ESCALATE_MODEL."
            ) from exc
        except openai.APIError as exc:
            raise ModelError(
                f"The larger model at {self.config.base_url} did not answer ({exc.__class__.__name__})."
            ) from exc


_remote: dict[EscalationConfig, RemoteModel] = {}


def remote_model(config: EscalationConfig) -> RemoteModel:
    if config not in _remote:
        _remote[config] = RemoteModel(config)
    return _remote[config]
