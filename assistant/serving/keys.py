"""API keys for the HTTP API: created by an admin, stored hashed, revocable by name.

A key is shown once, when it is created; the store keeps only its SHA-256 (keys are long
random strings, so a plain hash is enough: there is nothing to guess).

A key has a role (``agent``: answers; ``admin``: also the administrative endpoints), may be
limited to named knowledge bases and adapters (its scope), and may expire.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from knowledge.errors import ConfigError, StoreError
from knowledge.files import JsonFile, now
from knowledge.library import check_name

PREFIX = "tsu-"


@dataclass(frozen=True)
class KeyGrant:
    """What a valid key may do."""

    name: str
    role: str
    kbs: tuple[str, ...] | None = None
    """Knowledge bases the key may use; None: all."""
    adapters: tuple[str, ...] | None = None
    """Adapters (models) the key may use besides the base model; None: all."""
    expires: float | None = None
    """Unix time after which the key is refused; None: never."""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_use_kb(self, kb: str) -> bool:
        return self.kbs is None or kb in self.kbs

    def may_use_adapter(self, adapter: str) -> bool:
        return self.adapters is None or adapter in self.adapters


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeyStore:
    def __init__(self, data_dir: str | Path, extra_keys: tuple[str, ...] = ()) -> None:
        self.path = Path(data_dir) / "api_keys.json"
        self._file = JsonFile(
            self.path,
            f"The API key file {self.path} is damaged; restore it or delete it and create keys again.",
        )
        self._lock = threading.Lock()
        self._extra = {_digest(k) for k in extra_keys}
        """Keys from TSUMUGI_API_KEYS (settings), accepted without being stored."""

    def create(
        self,
        name: str,
        role: str = "agent",
        kbs: list[str] | None = None,
        adapters: list[str] | None = None,
        expires_days: float | None = None,
    ) -> str:
        """A new key named ``name``; returns the key itself (shown once, never stored).

        ``kbs`` and ``adapters`` limit it to those names (None or empty: all); ``expires_days``
        makes it stop working after that many days."""
        name = check_name(name, "API key")
        if role not in ("admin", "agent"):
            raise ConfigError(f"An API key's role should be admin or agent, got {role!r}.")
        if expires_days is not None and expires_days <= 0:
            raise ConfigError(f"A key's lifetime should be a positive number of days, got {expires_days}.")
        with self._lock:
            keys = self._file.load()
            if name in keys:
                raise ConfigError(
                    f"An API key named {name!r} exists already; revoke it first or choose another name."
                )
            key = PREFIX + secrets.token_urlsafe(32)
            keys[name] = {
                "sha256": _digest(key),
                "role": role,
                "created": now(),
                "kbs": sorted({check_name(k) for k in kbs}) if kbs else None,
                "adapters": sorted({check_name(a, "adapter") for a in adapters}) if adapters else None,
                "expires": time.time() + expires_days * 86400 if expires_days else None,
            }
            self._file.save(keys)
        return key

    def revoke(self, name: str) -> None:
        with self._lock:
            keys = self._file.load()
            if name not in keys:
                raise StoreError(f"There is no API key named {name!r}.")
            del keys[name]
            self._file.save(keys)

    def list(self) -> list[dict]:
        return [
            {
                "name": n,
                "role": v["role"],
                "created": v["created"],
                "kbs": v.get("kbs"),
                "adapters": v.get("adapters"),
                "expires": v.get("expires"),
            }
            for n, v in sorted(self._file.load().items())
        ]

    def configured(self) -> bool:
        return bool(self._extra) or bool(self._file.load())

    def verify(self, key: str) -> KeyGrant | None:
        """What the key may do when it is valid and unexpired, else None (compared in
        constant time)."""
        if not key:
            return None
        digest = _digest(key)
        for extra in self._extra:
            if hmac.compare_digest(digest, extra):
                return KeyGrant("TSUMUGI_API_KEYS", "admin")
        for name, record in self._file.load().items():
            if hmac.compare_digest(digest, record["sha256"]):
                expires = record.get("expires")
                if expires is not None and time.time() > expires:
                    return None
                kbs, adapters = record.get("kbs"), record.get("adapters")
                return KeyGrant(
                    name,
                    record["role"],
                    tuple(kbs) if kbs else None,
                    tuple(adapters) if adapters else None,
                    expires,
                )
        return None
