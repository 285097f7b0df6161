"""Per-key rate limits and a bounded queue for the HTTP API, so one client cannot starve the rest.

Three limits, each answered as OpenAI does: HTTP 429 with a ``Retry-After`` header.

- ``requests_per_minute`` per key, over a sliding minute;
- ``per_key`` answers in progress (or waiting for the model) for one key;
- ``queue`` answers in progress or waiting for all keys together. The web app has its own
  queue; the model serves both in turn (first come, first served), so a full API queue never
  holds web users back by more than its own length.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque

from assistant.config import ApiLimits


class RateLimited(Exception):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class RateLimiter:
    def __init__(self, limits: ApiLimits | None = None, clock=time.monotonic) -> None:
        self.limits = limits or ApiLimits()
        self._clock = clock
        self._lock = threading.Lock()
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self._running: dict[str, int] = defaultdict(int)
        self._total = 0

    def admit(self, key: str) -> Slot:
        """A slot for one answer for ``key``; raises :class:`RateLimited` when over a limit.

        The slot is held until it is released: the answer finished, failed, or its client
        went away, whichever comes first."""
        now, limits = self._clock(), self.limits
        with self._lock:
            recent = self._recent[key]
            while recent and recent[0] <= now - 60:
                recent.popleft()
            if len(recent) >= limits.requests_per_minute:
                raise RateLimited(
                    f"Rate limit reached: {limits.requests_per_minute} requests per minute for this "
                    "key (TSUMUGI_API_RATE); retry after the time in Retry-After.",
                    recent[0] + 60 - now,
                )
            if self._running[key] >= limits.per_key:
                raise RateLimited(
                    f"This key already has {limits.per_key} answers in progress "
                    "(TSUMUGI_API_KEY_CONCURRENCY); wait for one to finish.",
                    2,
                )
            if self._total >= limits.queue:
                raise RateLimited(
                    f"The server is busy: {limits.queue} answers are in progress or waiting "
                    "(TSUMUGI_API_QUEUE); retry shortly.",
                    5,
                )
            recent.append(now)
            self._running[key] += 1
            self._total += 1
        return Slot(self, key)

    def _free(self, key: str) -> None:
        with self._lock:
            self._running[key] -= 1
            self._total -= 1


class Slot:
    """One admitted answer; ``release`` frees it once, however many endings call it."""

    def __init__(self, limiter: RateLimiter, key: str) -> None:
        self._limiter, self._key = limiter, key
        self._once = threading.Lock()
        self._released = False

    def release(self) -> None:
        with self._once:
            if self._released:
                return
            self._released = True
        self._limiter._free(self._key)
