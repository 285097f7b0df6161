"""Users, roles and the rule about who may serve what.

Local single-user mode (the default) has no users and listens on 127.0.0.1 only: nobody else
can reach it, so it needs no login. As soon as an admin creates a user, the web app asks
everyone to log in. Roles:

- ``admin``: everything: knowledge bases, tuning, evaluation, deletions, users.
- ``agent``: chat and reply drafts.

Passwords are stored as scrypt hashes with a random salt per user (``hashlib.scrypt``,
n=2**14, r=8, p=1), in ``<data>/users.json`` written atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import inspect
import ipaddress
import secrets
import threading
import time
from pathlib import Path

from assistant import events
from knowledge.errors import ConfigError, StoreError
from knowledge.library import check_name
from knowledge.store import JsonFile

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
                "created": time.strftime("%Y-%m-%d %H:%M:%S"),
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
        user = self._file.load().get((name or "").strip())
        return bool(user) and check_password(password or "", user["password"])

    def role(self, name: str | None) -> str | None:
        """The user's role; with no users at all (local mode) everyone is admin."""
        users = self._file.load()
        if not users:
            return "admin"
        user = users.get(name or "")
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


class Forbidden(ConfigError):
    """The logged-in user's role does not allow the action."""


def require_role(fn, role: str, users: UserStore, quiet_outputs: int | None = None):
    """``fn`` as a Gradio handler that first checks the caller's role (from the login).

    The wrapper takes the ``gr.Request`` as its first parameter, which Gradio fills in; the
    original parameters follow unchanged, so inputs, progress trackers and generators work as
    before. A refused click says so. With ``quiet_outputs`` (handlers of page loads, timers and
    changes, which nobody clicked) a refused call changes nothing and says nothing, and allowed
    calls are not logged either (a timer would write a line a second).
    """
    import gradio as gr

    name = getattr(fn, "__name__", "handler")

    def allowed(request) -> bool:
        username = getattr(request, "username", None) if request is not None else None
        actual = users.role(username)
        if actual is not None and (role != "admin" or actual == "admin"):
            return True
        if quiet_outputs is not None:
            return False
        events.log("denied", user=username, action=name, role=actual)
        raise gr.Error(
            f"Your account ({username or 'not logged in'}) is not allowed to do this; ask an admin."
        )

    def nothing():
        skips = tuple(gr.skip() for _ in range(quiet_outputs or 0))
        return skips[0] if len(skips) == 1 else skips

    if inspect.isgeneratorfunction(fn):

        def wrapper(request, *args, **kwargs):
            if not allowed(request):
                yield nothing()
                return None
            if quiet_outputs is not None:
                return (yield from fn(*args, **kwargs))
            with _action(name, request):
                return (yield from fn(*args, **kwargs))

    else:

        def wrapper(request, *args, **kwargs):
            if not allowed(request):
                return nothing()
            if quiet_outputs is not None:
                return fn(*args, **kwargs)
            with _action(name, request):
                return fn(*args, **kwargs)

    original = inspect.signature(fn)
    request_param = inspect.Parameter(
        "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request
    )
    wrapper.__signature__ = original.replace(parameters=[request_param, *original.parameters.values()])
    wrapper.__annotations__ = {"request": gr.Request}
    wrapper.__name__ = name
    wrapper.__qualname__ = getattr(fn, "__qualname__", name)
    wrapper.__tsumugi_role__ = role
    return wrapper


@contextlib.contextmanager
def _action(name: str, request):
    """Log a web-app action with its user, duration and outcome."""
    started = time.perf_counter()
    outcome = "ok"
    try:
        yield
    except Exception as exc:
        outcome = f"{exc.__class__.__name__}: {exc}"[:300]
        raise
    finally:
        user = getattr(request, "username", None) if request is not None else None
        events.log(
            "action",
            user=user,
            action=name,
            outcome=outcome,
            ms=round((time.perf_counter() - started) * 1000),
        )


def guard_functions(demo, fn_ids, role: str, users: UserStore) -> None:
    """Wrap the Gradio event handlers registered as ``fn_ids`` so only ``role`` may run them."""
    for fn_id in fn_ids:
        block_fn = demo.fns[fn_id]
        if block_fn.fn is None or getattr(block_fn.fn, "__tsumugi_role__", None):
            continue
        # A click or a submit is someone asking for the action: refuse it out loud. Anything
        # else (page load, timer, a shared dropdown changing) is refused silently.
        triggers = {target[1] for target in block_fn.targets}
        quiet = None if triggers & {"click", "submit"} else len(block_fn.outputs)
        block_fn.fn = require_role(block_fn.fn, role, users, quiet)
