"""Users, roles and the rule about who may serve what.

Local single-user mode (the default) has no users and listens on 127.0.0.1 only: nobody else
can reach it, so it needs no login. As soon as an admin creates a user, the web app asks
everyone to log in. A public server (a Space) works differently: see serving.access. Roles:

- ``admin``: everything: knowledge bases, tuning, evaluation, deletions, users.
- ``agent``: chat and reply drafts.

Passwords are stored as scrypt hashes with a random salt per user (``hashlib.scrypt``,
n=2**14, r=8, p=1), in ``<data>/users.json`` written atomically.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
from pathlib import Path

from knowledge.errors import ConfigError, StoreError
from knowledge.files import JsonFile, now
from knowledge.library import check_name
from knowledge.names import spelling

ROLES = ("admin", "agent")
MIN_PASSWORD = 8
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hash_password(password, bytes.fromhex(salt)).split("$")[2]
    return hmac.compare_digest(candidate, digest)


_DUMMY_HASH = hash_password(secrets.token_hex(16))
"""Checked against when the name is unknown, for equal work."""


class UserStore:
    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / "users.json"
        self._file = JsonFile(self.path, f"The user file {self.path} is damaged; restore it from a backup.")
        self._lock = threading.Lock()

    def any(self) -> bool:
        return bool(self._file.load())

    def add(self, name: str, password: str, role: str = "agent") -> None:
        name = check_name(name, "user")
        if role not in ROLES:
            raise ConfigError(f"A role should be admin or agent, got {role!r}.")
        if len(password or "") < MIN_PASSWORD:
            raise ConfigError(f"A password needs at least {MIN_PASSWORD} characters.")
        with self._lock:
            users = self._file.load()
            if name in users:
                raise ConfigError(
                    f"The user {name!r} exists already; choose another name or change the password."
                )
            if not users and role != "admin":
                raise ConfigError("The first user must be an admin, or nobody could manage the others.")
            users[name] = {
                "password": hash_password(password),
                "role": role,
                "created": now(),
            }
            self._file.save(users)

    def set_password(self, name: str, password: str) -> None:
        if len(password or "") < MIN_PASSWORD:
            raise ConfigError(f"A password needs at least {MIN_PASSWORD} characters.")
        with self._lock:
            users = self._file.load()
            if name not in users:
                raise StoreError(f"There is no user {name!r}.")
            users[name]["password"] = hash_password(password)
            self._file.save(users)

    def delete(self, name: str) -> None:
        with self._lock:
            users = self._file.load()
            if name not in users:
                raise StoreError(f"There is no user {name!r}.")
            admins = [n for n, u in users.items() if u["role"] == "admin"]
            if users[name]["role"] == "admin" and admins == [name]:
                raise ConfigError("This is the last admin; make another admin before deleting it.")
            del users[name]
            self._file.save(users)

    def list(self) -> list[dict]:
        return [
            {"name": n, "role": u["role"], "created": u["created"]}
            for n, u in sorted(self._file.load().items())
        ]

    def verify(self, name: str, password: str) -> bool:
        """Whether ``password`` is the user's. An unknown name costs the same hashing as a
        known one, so the time taken does not tell which users exist."""
        user = self._file.load().get(spelling(name))
        matches = check_password(password or "", user["password"] if user else _DUMMY_HASH)
        return bool(user) and matches

    def change_password(self, name: str, old: str, new: str) -> None:
        """A user changing their own password: the old one is asked for first."""
        if not self.verify(name, old):
            raise ConfigError("The current password is wrong; nothing was changed.")
        self.set_password(name, new)

    def role(self, name: str | None) -> str | None:
        """The user's role, or None for a name that is not a user (see serving.access for
        what a server without users allows)."""
        user = self._file.load().get(spelling(name))
        return user["role"] if user else None


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, users: UserStore, allow_open: bool) -> None:
    """Refuse to listen on a network address with nobody required to log in."""
    if is_loopback(host) or users.any() or allow_open:
        return
    raise ConfigError(
        f"Refusing to serve on {host} without login: anyone on the network could read and change "
        "your documents. Create an admin with `python -m assistant users --add NAME --role admin`, "
        "or set TSUMUGI_ALLOW_OPEN=1 to serve without login anyway."
    )
