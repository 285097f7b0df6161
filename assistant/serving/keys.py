"""API keys for the HTTP API: created by an admin, stored hashed, revocable by name.

A key is shown once, when it is created; the store keeps only its SHA-256 (keys are long
random strings, so a plain hash is enough: there is nothing to guess).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from pathlib import Path

from knowledge.errors import ConfigError, StoreError
from knowledge.files import JsonFile, now
from knowledge.library import check_name

PREFIX = "tsu-"


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

    def create(self, name: str, role: str = "agent") -> str:
        """A new key named ``name``; returns the key itself (shown once, never stored)."""
        name = check_name(name, "API key")
        if role not in ("admin", "agent"):
            raise ConfigError(f"An API key's role should be admin or agent, got {role!r}.")
        with self._lock:
            keys = self._file.load()
            if name in keys:
                raise ConfigError(
                    f"An API key named {name!r} exists already; revoke it first or choose another name."
                )
            key = PREFIX + secrets.token_urlsafe(32)
            keys[name] = {"sha256": _digest(key), "role": role, "created": now()}
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
            {"name": n, "role": v["role"], "created": v["created"]}
            for n, v in sorted(self._file.load().items())
        ]

    def configured(self) -> bool:
        return bool(self._extra) or bool(self._file.load())

    def verify(self, key: str) -> dict | None:
        """The key's record (name, role) when valid, else None (compared in constant time)."""
        if not key:
            return None
        digest = _digest(key)
        for extra in self._extra:
            if hmac.compare_digest(digest, extra):
                return {"name": "TSUMUGI_API_KEYS", "role": "admin"}
        for name, record in self._file.load().items():
            if hmac.compare_digest(digest, record["sha256"]):
                return {"name": name, "role": record["role"]}
        return None
