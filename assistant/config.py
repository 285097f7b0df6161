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
from assistant.generation.remote import Endpoint, chat_endpoint
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
class OpenLimits:
    """What an anonymous visitor of an open server may cost."""

    max_answer_tokens: int = 384
    """TSUMUGI_OPEN_MAX_TOKENS: longest answer an anonymous visitor gets."""
    max_question_chars: int = 2000
    """Longest question or customer message an anonymous visitor may send."""
    queue_size: int = 16
    """TSUMUGI_QUEUE_SIZE: requests waiting in the web app's queue; more are turned away."""
    public_kbs: tuple[str, ...] = ()
    """TSUMUGI_PUBLIC_KBS: comma-separated knowledge bases anonymous visitors may use (default:
    the demo knowledge base)."""

    def __post_init__(self) -> None:
        if self.max_answer_tokens < 16:
            raise ConfigError(f"TSUMUGI_OPEN_MAX_TOKENS should be at least 16, got {self.max_answer_tokens}.")
        if self.queue_size < 1:
            raise ConfigError(f"TSUMUGI_QUEUE_SIZE should be at least 1, got {self.queue_size}.")


@dataclass(frozen=True)
class LoginLimits:
    free_failures: int = 5
    """Failed logins allowed within ``window_s`` before a lock."""
    window_s: float = 900.0
    """How long a failure counts."""
    base_lock_s: float = 30.0
    """The first lock; each further failure doubles it."""
    max_lock_s: float = 900.0
    """The longest lock."""
    locked_delay_s: float = 1.0
    """How long a refused attempt on a locked name or address waits before its answer."""
    session_hours: float = 12.0
    """TSUMUGI_SESSION_HOURS: how long a login lasts."""

    def __post_init__(self) -> None:
        if self.free_failures < 1 or self.window_s <= 0 or self.base_lock_s <= 0:
            raise ConfigError("Login limits should be positive.")
        if self.session_hours <= 0:
            raise ConfigError(f"TSUMUGI_SESSION_HOURS should be positive, got {self.session_hours}.")


@dataclass(frozen=True)
class ApiLimits:
    requests_per_minute: int = 60
    """TSUMUGI_API_RATE: chat requests one key may send per minute."""
    per_key: int = 8
    """TSUMUGI_API_KEY_CONCURRENCY: answers one key may have in progress at once (lower it when
    several teams share the server, so one key cannot take the whole queue)."""
    queue: int = 8
    """TSUMUGI_API_QUEUE: answers all keys together may have in progress or waiting."""

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "per_key", "queue"):
            if getattr(self, name) < 1:
                raise ConfigError(f"API limit `{name}` should be at least 1, got {getattr(self, name)}.")


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    """TSUMUGI_DATA: where knowledge bases, models and jobs live (/data on a Space with storage)."""
    model_cache: Path = Path("data/models")
    """TSUMUGI_MODEL_CACHE: converted and cached base models."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """TSUMUGI_MODEL, TSUMUGI_PRECISION, TSUMUGI_DEVICE, TSUMUGI_MAX_BATCH: the chat model."""
    embed_model: str = DEFAULT_EMBED_MODEL
    """TSUMUGI_EMBED_MODEL: embedding model for new knowledge bases."""
    models_dir: Path | None = None
    """TSUMUGI_MODELS_DIR: a folder of model folders the Models tab lists (default
    ``<data>/model-folders``; merged adapter exports under ``<data>/exports`` are listed too)."""
    free_memory_mb: int | None = None
    """TSUMUGI_FREE_MEMORY_MB: the memory a model may use, in place of what is free now (to keep
    room for other work); a model whose estimate is larger is refused before it loads."""
    rerank_model: str | None = None
    """TSUMUGI_RERANK_MODEL: a cross-encoder (folder or cached hub id) that reorders the first
    retrieved candidates; unset: no reranking."""
    host: str = "127.0.0.1"
    """TSUMUGI_HOST: address the app listens on."""
    port: int = 7860
    """TSUMUGI_PORT: port the app listens on."""
    allow_downloads: bool = False
    """TSUMUGI_ALLOW_DOWNLOADS: let models be fetched from the Hugging Face hub (off: offline)."""
    limits: IngestLimits = field(default_factory=IngestLimits)
    """TSUMUGI_MAX_FILE_MB, TSUMUGI_MAX_FILES, TSUMUGI_MAX_PAGES, TSUMUGI_MAX_UNPACKED_MB,
    TSUMUGI_PARSE_TIMEOUT, TSUMUGI_PARSE_MEMORY_MB, TSUMUGI_MAX_DATA_MB: what one upload (a
    document, or a tuning or evaluation file) may cost (see knowledge/limits.py)."""
    chat: Endpoint | None = None
    """TSUMUGI_CHAT_URL, TSUMUGI_CHAT_MODEL, TSUMUGI_CHAT_KEY (read from the environment only):
    the main chat model on an OpenAI-compatible server (vLLM, TGI, llama.cpp, Ollama, another
    Tsumugi) instead of in this process; tuned adapters still answer here."""
    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    """TSUMUGI_ESCALATE_URL, TSUMUGI_ESCALATE_MODEL, TSUMUGI_ESCALATE_KEY (or OPENAI_API_KEY),
    TSUMUGI_CONFIDENCE_THRESHOLD: the larger model for low-confidence answers."""
    demo: bool = False
    """TSUMUGI_DEMO: seed a sample knowledge base when there is none (on by default on a Space)."""
    allow_open: bool = False
    """TSUMUGI_ALLOW_OPEN: open mode (on by default on a Space): anonymous visitors may ask and
    draft on the public knowledge bases; administration needs an admin's login at /admin."""
    api_keys: tuple[str, ...] = ()
    """TSUMUGI_API_KEYS: comma-separated keys accepted by the HTTP API, besides those created
    with `python -m assistant keys --create`."""
    open_limits: OpenLimits = field(default_factory=OpenLimits)
    """TSUMUGI_OPEN_MAX_TOKENS, TSUMUGI_QUEUE_SIZE, TSUMUGI_PUBLIC_KBS: what anonymous visitors
    of an open server (a Space) may use (see assistant/serving/access.py)."""
    login: LoginLimits = field(default_factory=LoginLimits)
    """TSUMUGI_SESSION_HOURS: how long a web login lasts (see assistant/serving/logins.py)."""
    api_limits: ApiLimits = field(default_factory=ApiLimits)
    """TSUMUGI_API_RATE, TSUMUGI_API_KEY_CONCURRENCY, TSUMUGI_API_QUEUE: per-key rate limits and
    the API's bounded queue (see assistant/serving/ratelimit.py)."""

    @classmethod
    def from_env(cls) -> Settings:
        problems: list[str] = []
        data_dir = Path(_env("TSUMUGI_DATA", _default_data_dir()))
        try:
            model = ModelConfig(
                name=_env("TSUMUGI_MODEL", EMBEDDED_MODEL),
                precision=_env("TSUMUGI_PRECISION", "auto"),  # type: ignore[arg-type]
                device=_env("TSUMUGI_DEVICE", "auto"),  # type: ignore[arg-type]
                max_batch=_env_int("TSUMUGI_MAX_BATCH", 16, problems),
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
        chat = None
        if _env("TSUMUGI_CHAT_URL", "") or _env("TSUMUGI_CHAT_MODEL", ""):
            try:
                chat = chat_endpoint(
                    _env("TSUMUGI_CHAT_URL", ""), _env("TSUMUGI_CHAT_MODEL", ""), _env("TSUMUGI_CHAT_KEY", "")
                )
            except ConfigError as exc:
                problems.append(str(exc))
        try:
            limits = IngestLimits(
                max_file_mb=_env_float("TSUMUGI_MAX_FILE_MB", 100.0, problems),
                max_files=_env_int("TSUMUGI_MAX_FILES", 500, problems),
                max_pages=_env_int("TSUMUGI_MAX_PAGES", 2000, problems),
                max_unpacked_mb=_env_float("TSUMUGI_MAX_UNPACKED_MB", 500.0, problems),
                parse_timeout_s=_env_float("TSUMUGI_PARSE_TIMEOUT", 120.0, problems),
                max_parse_memory_mb=_env_int("TSUMUGI_PARSE_MEMORY_MB", 4096, problems),
                max_data_mb=_env_float("TSUMUGI_MAX_DATA_MB", 50.0, problems),
            )
        except ConfigError as exc:
            problems.append(str(exc))
            limits = IngestLimits()
        try:
            open_limits = OpenLimits(
                max_answer_tokens=_env_int("TSUMUGI_OPEN_MAX_TOKENS", 384, problems),
                queue_size=_env_int("TSUMUGI_QUEUE_SIZE", 16, problems),
                public_kbs=tuple(k.strip() for k in _env("TSUMUGI_PUBLIC_KBS", "").split(",") if k.strip()),
            )
            login = LoginLimits(session_hours=_env_float("TSUMUGI_SESSION_HOURS", 12.0, problems))
            api_limits = ApiLimits(
                requests_per_minute=_env_int("TSUMUGI_API_RATE", 60, problems),
                per_key=_env_int("TSUMUGI_API_KEY_CONCURRENCY", 8, problems),
                queue=_env_int("TSUMUGI_API_QUEUE", 8, problems),
            )
        except ConfigError as exc:
            problems.append(str(exc))
            open_limits, login, api_limits = OpenLimits(), LoginLimits(), ApiLimits()
        settings = cls(
            data_dir=data_dir,
            model_cache=Path(_env("TSUMUGI_MODEL_CACHE", str(data_dir / "models"))),
            model=model,
            embed_model=_env("TSUMUGI_EMBED_MODEL", DEFAULT_EMBED_MODEL),
            models_dir=Path(folder) if (folder := _env("TSUMUGI_MODELS_DIR", "")) else None,
            free_memory_mb=_env_int("TSUMUGI_FREE_MEMORY_MB", 0, problems) or None,
            rerank_model=_env("TSUMUGI_RERANK_MODEL", "").strip() or None,
            # A Hugging Face Space tells Gradio where to listen through GRADIO_SERVER_*.
            host=_env("TSUMUGI_HOST", _env("GRADIO_SERVER_NAME", "127.0.0.1")),
            port=_env_int("TSUMUGI_PORT", int(_env("GRADIO_SERVER_PORT", "7860")), problems),
            allow_downloads=_env_bool("TSUMUGI_ALLOW_DOWNLOADS", False),
            limits=limits,
            chat=chat,
            escalation=escalation,
            demo=_env_bool("TSUMUGI_DEMO", bool(os.environ.get("SPACE_ID"))),
            # A Space's visibility (public or private) is its access control.
            allow_open=_env_bool("TSUMUGI_ALLOW_OPEN", bool(os.environ.get("SPACE_ID"))),
            api_keys=tuple(k.strip() for k in _env("TSUMUGI_API_KEYS", "").split(",") if k.strip()),
            open_limits=open_limits,
            login=login,
            api_limits=api_limits,
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
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
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
