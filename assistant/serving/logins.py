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
from knowledge.names import spelling

CLIENT = contextvars.ContextVar("tsumugi_login_client", default=None)
"""The address of the client whose request is being served; set by the server's middleware."""


MAX_TRACKED = 10_000
"""Above this many names and addresses with failures on record, the stale ones are dropped."""


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
        name, client = spelling(username), CLIENT.get()
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
            if len(self._failures) > MAX_TRACKED:  # forget names and addresses gone quiet
                for key in [k for k, v in self._failures.items() if not v or v[-1] < now - limits.window_s]:
                    self._failures.pop(key, None)
                    if self._locked_until.get(key, 0.0) < now:
                        self._locked_until.pop(key, None)
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

    Gradio keeps ``token -> user name`` in ``app.tokens``: it reads it with ``get``, and its
    logout walks ``keys()`` and deletes a user's tokens. Expired tokens are dropped before any
    read, so every way in sees only live ones.
    """

    def __init__(self, ttl_s: float, clock=time.monotonic) -> None:
        super().__init__()
        self.ttl_s = ttl_s
        self._clock = clock
        self._issued: dict[str, float] = {}

    def _purge(self) -> None:
        now = self._clock()
        for token in [t for t, issued in self._issued.items() if now - issued > self.ttl_s]:
            self._issued.pop(token, None)
            super().pop(token, None)

    def __setitem__(self, token, username) -> None:
        self._purge()
        self._issued[token] = self._clock()
        super().__setitem__(token, username)

    def __delitem__(self, token) -> None:
        self._issued.pop(token, None)
        super().__delitem__(token)

    def pop(self, token, *default):
        self._issued.pop(token, None)
        return super().pop(token, *default)

    def get(self, token, default=None):
        self._purge()
        return super().get(token, default)

    def __getitem__(self, token):
        self._purge()
        return super().__getitem__(token)

    def __contains__(self, token) -> bool:
        self._purge()
        return super().__contains__(token)

    def keys(self):
        self._purge()
        return super().keys()

    def __iter__(self):
        self._purge()
        return super().__iter__()

    def items(self):
        self._purge()
        return super().items()
