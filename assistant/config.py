"""Settings from environment variables, validated once at start-up."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from assistant.answering.confidence import DEFAULT_THRESHOLD
from assistant.answering.escalate import EscalationConfig
from assistant.generation.config import EMBEDDED_MODEL, ModelConfig
from knowledge.embed import DEFAULT_EMBED_MODEL
from knowledge.errors import ConfigError
from knowledge.limits import IngestLimits


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value.strip() == "" else value.strip()


def _env_int(name: str, default: int, problems: list[str]) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        problems.append(f"{name} should be a whole number, got {raw!r}.")
        return default


def _env_float(name: str, default: float, problems: list[str]) -> float:
    raw = _env(name, str(default))
    try:
        return float(raw)
    except ValueError:
        problems.append(f"{name} should be a number, got {raw!r}.")
        return default


def _env_bool(name: str, default: bool) -> bool:
    return _env(name, "1" if default else "0").lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    """TSUMUGI_DATA: where knowledge bases, models and jobs live (/data on a Space with storage)."""
    model_cache: Path = Path("data/models")
    """TSUMUGI_MODEL_CACHE: converted and cached base models."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """TSUMUGI_MODEL, TSUMUGI_PRECISION, TSUMUGI_DEVICE: the chat model."""
    embed_model: str = DEFAULT_EMBED_MODEL
    """TSUMUGI_EMBED_MODEL: embedding model for new knowledge bases."""
    host: str = "127.0.0.1"
    """TSUMUGI_HOST: address the app listens on."""
    port: int = 7860
    """TSUMUGI_PORT: port the app listens on."""
    allow_downloads: bool = False
    """TSUMUGI_ALLOW_DOWNLOADS: let models be fetched from the Hugging Face hub (off: offline)."""
    limits: IngestLimits = field(default_factory=IngestLimits)
    """TSUMUGI_MAX_FILE_MB, TSUMUGI_MAX_FILES, TSUMUGI_MAX_PAGES, TSUMUGI_MAX_UNPACKED_MB,
    TSUMUGI_PARSE_TIMEOUT: what one upload may cost (see knowledge/limits.py)."""
    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    """TSUMUGI_ESCALATE_URL, TSUMUGI_ESCALATE_MODEL, TSUMUGI_ESCALATE_KEY (or OPENAI_API_KEY),
    TSUMUGI_CONFIDENCE_THRESHOLD: the larger model for low-confidence answers."""
    demo: bool = False
    """TSUMUGI_DEMO: seed a sample knowledge base when there is none (on by default on a Space)."""
    allow_open: bool = False
    """TSUMUGI_ALLOW_OPEN: serve on a network address without login (refused otherwise)."""
    api_keys: tuple[str, ...] = ()
    """TSUMUGI_API_KEYS: comma-separated keys accepted by the HTTP API, besides those created
    with `python -m assistant keys --create`."""

    @classmethod
    def from_env(cls) -> Settings:
        problems: list[str] = []
        data_dir = Path(_env("TSUMUGI_DATA", _default_data_dir()))
        try:
            model = ModelConfig(
                name=_env("TSUMUGI_MODEL", EMBEDDED_MODEL),
                precision=_env("TSUMUGI_PRECISION", "auto"),  # type: ignore[arg-type]
                device=_env("TSUMUGI_DEVICE", "auto"),  # type: ignore[arg-type]
            )
        except ConfigError as exc:
            problems.append(str(exc))
            model = ModelConfig()
        try:
            threshold = float(_env("TSUMUGI_CONFIDENCE_THRESHOLD", str(DEFAULT_THRESHOLD)))
        except ValueError:
            problems.append("TSUMUGI_CONFIDENCE_THRESHOLD should be a number between 0 and 1.")
            threshold = DEFAULT_THRESHOLD
        try:
            escalation = EscalationConfig(
                base_url=_env("TSUMUGI_ESCALATE_URL", "").rstrip("/"),
                model=_env("TSUMUGI_ESCALATE_MODEL", ""),
                api_key=escalation_key(),
                threshold=threshold,
            )
        except ConfigError as exc:
            problems.append(str(exc))
            escalation = EscalationConfig()
        try:
            limits = IngestLimits(
                max_file_mb=_env_float("TSUMUGI_MAX_FILE_MB", 100.0, problems),
                max_files=_env_int("TSUMUGI_MAX_FILES", 500, problems),
                max_pages=_env_int("TSUMUGI_MAX_PAGES", 2000, problems),
                max_unpacked_mb=_env_float("TSUMUGI_MAX_UNPACKED_MB", 500.0, problems),
                parse_timeout_s=_env_float("TSUMUGI_PARSE_TIMEOUT", 120.0, problems),
            )
        except ConfigError as exc:
            problems.append(str(exc))
            limits = IngestLimits()
        settings = cls(
            data_dir=data_dir,
            model_cache=Path(_env("TSUMUGI_MODEL_CACHE", str(data_dir / "models"))),
            model=model,
            embed_model=_env("TSUMUGI_EMBED_MODEL", DEFAULT_EMBED_MODEL),
            # A Hugging Face Space tells Gradio where to listen through GRADIO_SERVER_*.
            host=_env("TSUMUGI_HOST", _env("GRADIO_SERVER_NAME", "127.0.0.1")),
            port=_env_int("TSUMUGI_PORT", int(_env("GRADIO_SERVER_PORT", "7860")), problems),
            allow_downloads=_env_bool("TSUMUGI_ALLOW_DOWNLOADS", False),
            limits=limits,
            escalation=escalation,
            demo=_env_bool("TSUMUGI_DEMO", bool(os.environ.get("SPACE_ID"))),
            # A Space's visibility (public or private) is its access control.
            allow_open=_env_bool("TSUMUGI_ALLOW_OPEN", bool(os.environ.get("SPACE_ID"))),
            api_keys=tuple(k.strip() for k in _env("TSUMUGI_API_KEYS", "").split(",") if k.strip()),
        )
        if not 1 <= settings.port <= 65535:
            problems.append(f"TSUMUGI_PORT should be between 1 and 65535, got {settings.port}.")
        if problems:
            raise ConfigError(" ".join(problems))
        return settings


def escalation_key() -> str:
    """The larger model's API key from the environment (never written to disk by Tsumugi)."""
    return _env("TSUMUGI_ESCALATE_KEY", _env("OPENAI_API_KEY", ""))


def _default_data_dir() -> str:
    # A Hugging Face Space with persistent storage mounts it at /data.
    if os.environ.get("SPACE_ID") and os.path.isdir("/data") and os.access("/data", os.W_OK):
        return "/data"
    return "data"


def prepare_environment(settings: Settings) -> None:
    """Offline by default, and quiet about optional kernels that are not installed."""
    if not settings.allow_downloads:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # bitsandbytes logs a warning at import when the optional `kernels` package is absent.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # peft asks transformers a deprecated question on every LoRA model; nothing for users to do.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    for noisy in ("transformers", "sentence_transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
