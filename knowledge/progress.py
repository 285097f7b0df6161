"""Progress events shared by every long stage (ingestion, re-embedding, and later training)."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Progress:
    """One step of long work: ``done`` of ``total`` units, with an estimate of the time left."""

    stage: str
    done: float
    total: float
    unit: str = "files"
    message: str = ""
    elapsed: float = 0.0
    eta: float | None = None
    items: tuple[str, ...] = ()
    """The files (or other items) this step is working on."""
    metrics: dict = field(default_factory=dict)
    """Numbers a stage reports beside its count (loss, tokens per second, ...)."""

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)

    def describe(self) -> str:
        parts = [f"{self.stage}: {self.done:g}/{self.total:g} {self.unit}"]
        if self.message:
            parts.append(self.message)
        if self.eta is not None:
            parts.append(f"about {format_seconds(self.eta)} left")
        return " · ".join(parts)


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


@dataclass
class Clock:
    """Turns a fraction of work done into an ETA."""

    start: float = field(default_factory=time.monotonic)

    def event(
        self,
        stage: str,
        done: float,
        total: float,
        unit: str,
        message: str = "",
        fraction: float | None = None,
        items: tuple[str, ...] = (),
    ) -> Progress:
        elapsed = time.monotonic() - self.start
        frac = fraction if fraction is not None else (done / total if total else 0.0)
        eta = elapsed * (1 - frac) / frac if frac > 0.02 and elapsed > 0.5 else None
        return Progress(stage, done, total, unit, message, elapsed, eta, items)


def drive_events(gen: Generator[Progress, None, T], on_event: Callable[[Progress], None] | None = None) -> T:
    """Run a progress generator to its end, handing each event to ``on_event``; return its result.

    The one loop that drives long work to completion (CLI, bench, tests, the job worker)."""
    relay = Relay(gen)
    for event in relay:
        if on_event is not None:
            on_event(event)
    return relay.result


class Relay(Generic[T]):
    """A progress generator as a plain iterable of its events; ``result`` holds its return value
    once iteration ends. For handlers that turn each event into something else (UI updates)."""

    def __init__(self, gen: Generator[Progress, None, T]) -> None:
        self._gen = gen
        self.result: T | None = None

    def __iter__(self) -> Iterator[Progress]:
        self.result = yield from self._gen


def on_one_thread(gen: Generator[Progress, None, T]) -> Generator[Progress, None, T]:
    """``gen``, every step of it run on one thread of its own, and closed there too.

    Ingestion holds the knowledge base's write lock, a file lock bound to the thread that took
    it, from its first event to its last. A web server resumes a handler's generator on
    whichever worker thread is free, and closes one whose browser went away from its event
    loop's thread: released there, the lock stayed taken, and every later upload to that base
    waited for ever. Here the consumer may step and close from any thread; ``gen`` only ever
    runs on its own, and a close ends it there at the event it had reached (what it stored
    stays; each file is its own transaction), without making the closing thread wait.
    """
    from concurrent.futures import ThreadPoolExecutor

    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tsumugi-work")
    relay = Relay(gen)
    steps = iter(relay)
    finished = False
    try:
        while True:
            try:
                event = worker.submit(next, steps).result()
            except StopIteration:
                finished = True
                return relay.result
            yield event
    finally:
        if not finished:
            worker.submit(steps.close)
        worker.shutdown(wait=False)
