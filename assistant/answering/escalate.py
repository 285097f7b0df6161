"""Escalation: a larger model behind any OpenAI-compatible endpoint answers what the small
model is unsure of, from the same passages.

The endpoint comes from settings (TSUMUGI_ESCALATE_URL, TSUMUGI_ESCALATE_MODEL,
TSUMUGI_ESCALATE_KEY, or OPENAI_API_KEY). Nothing is sent anywhere unless it is set.
"""

from __future__ import annotations

from dataclasses import dataclass

from assistant.answering.confidence import DEFAULT_THRESHOLD
from assistant.generation.remote import Endpoint, RemoteModel, remote_model
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


def escalation_model(config: EscalationConfig) -> RemoteModel:
    """The larger model of ``config``, streaming like the local one."""
    return remote_model(Endpoint(config.base_url, config.model, config.api_key, config.timeout_s))
