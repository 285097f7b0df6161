"""Web logins: throttled per user name and per client address, logged, and sessions that expire.

After ``free_failures`` failed logins within ``window_s`` for one name or from one address,
that name or address is locked: first for ``base_lock_s`` seconds, doubling with every further
failure up to ``max_lock_s``. While locked, every attempt is refused without checking the
password (the right one too), and answered after a short delay. Each failure and each lock
is a line in the event log. A success clears the name's failures; the address keeps its own,
so one address cannot try many names.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections import defaultdict, deque

from assistant import events
from assistant.config import LoginLimits

CLIENT = contextvars.ContextVar("tsumugi_login_client", default=None)
"""The address of the client whose request is being served; set by the server's middleware."""


class LoginGuard:
    """Logins with throttling. ``check`` is Gradio's ``auth`` callable: a coroutine function,
    which Gradio awaits (an object with an async ``__call__`` would not be awaited, and its
    coroutine would count as a success)."""

    def __init__(self, users, limits: LoginLimits | None = None, clock=time.monotonic) -> None:
        self.users = users
        self.limits = limits or LoginLimits()
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._locked_until: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def locked_for(self, name: str, client: str | None) -> float:
        """Seconds left on the longest lock on this name or address (0: not locked)."""
        now = self._clock()
        with self._lock:
            return max((self._locked_until.get(k, 0.0) - now for k in self._keys(name, client)), default=0.0)

    async def check(self, username: str, password: str) -> bool:
        name, client = (username or "").strip(), CLIENT.get()
        left = self.locked_for(name, client)
        if left > 0:
            events.log("login_locked", user=name, client=client, retry_after_s=round(left))
            await asyncio.sleep(self.limits.locked_delay_s)  # costs the attacker time too
            return False
        ok = await asyncio.to_thread(self.users.verify, name, password)
        if ok:
            with self._lock:
                self._failures.pop(("user", name), None)
                self._locked_until.pop(("user", name), None)
            events.log("login", user=name, client=client)
            return True
        lock_s = self._fail(name, client)
        events.log("login_failed", user=name, client=client, locked_s=round(lock_s) or None)
        return False

    def _keys(self, name: str, client: str | None) -> list[tuple[str, str]]:
        return [("user", name)] + ([("client", client)] if client else [])

    def _fail(self, name: str, client: str | None) -> float:
        """Count a failure; returns the lock it starts (0 when none)."""
        now, limits, longest = self._clock(), self.limits, 0.0
        with self._lock:
            for key in self._keys(name, client):
                recent = self._failures[key]
                recent.append(now)
                while recent and recent[0] < now - limits.window_s:
                    recent.popleft()
                over = len(recent) - limits.free_failures
                if over >= 0:
                    lock_s = min(limits.base_lock_s * 2 ** min(over, 16), limits.max_lock_s)
                    self._locked_until[key] = now + lock_s
                    longest = max(longest, lock_s)
        return longest


class SessionTokens(dict):
    """Gradio's table of login tokens, with an expiry: a token older than ``ttl_s`` is gone.

    Gradio keeps ``token -> user name`` in ``app.tokens`` and reads it with ``get``; this
    dict records when each token was issued and forgets it once expired, so the next request
    asks for a login again.
    """

    def __init__(self, ttl_s: float, clock=time.monotonic) -> None:
        super().__init__()
        self.ttl_s = ttl_s
        self._clock = clock
        self._issued: dict[str, float] = {}

    def __setitem__(self, token, username) -> None:
        self._issued[token] = self._clock()
        super().__setitem__(token, username)

    def _expired(self, token) -> bool:
        issued = self._issued.get(token)
        return issued is not None and self._clock() - issued > self.ttl_s

    def get(self, token, default=None):
        if token in self and self._expired(token):
            self.pop(token, None)
            self._issued.pop(token, None)
            return default
        return super().get(token, default)

    def __getitem__(self, token):
        value = self.get(token, _MISSING)
        if value is _MISSING:
            raise KeyError(token)
        return value


_MISSING = object()
