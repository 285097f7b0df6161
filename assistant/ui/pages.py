"""A streamed answer's pages for Gradio: paced, from reused threads, closed when nobody reads."""

from __future__ import annotations

import functools
import queue
import threading
import time

from assistant import events
from assistant.ui.common import EVENTS_AT_ONCE

UI_UPDATE_S = 0.1
"""The longest a streamed answer waits between page updates. Ten a second reads as smooth, and
each update sends the whole chat and its sources again: at every token, 8 web clients spent a
sixth of the server's time on updates (bench/load.py)."""


WAKE_S = 0.5
"""The longest a streamed answer's event goes without giving Gradio a page (the last one
again while the answer has nothing new). Gradio's cancel (a client's, a closed page's) waits
for the event's current step: while the model split a question or read a long prompt, that
step had nothing to give, and the cancel request itself timed out after 5 s."""


class _Pumps:
    """Daemon threads that run streamed answers for the pages: at most ``size`` at once, and
    reused. A cancelled event's answer runs on until its next state; a thread of its own per
    answer let those outlive the events' concurrency limit, and lost what a thread keeps
    (the Japanese analyser, SQLite connections). A job waits while all are busy."""

    def __init__(self, size: int):
        self.size, self.threads, self.idle, self.waiting = size, 0, 0, 0
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()

    def submit(self, job) -> None:
        with self.lock:
            if self.idle:
                self.idle -= 1  # claimed here, so two jobs never count on one idle thread
            elif self.threads < self.size:
                self.threads += 1
                threading.Thread(target=self._work, name=f"answer-pages-{self.threads}", daemon=True).start()
            else:
                self.waiting += 1  # the next thread to finish takes it
        self.jobs.put(job)

    def _work(self) -> None:
        while True:
            try:
                self.jobs.get()()
            except BaseException as exc:  # a job reports its own errors; the thread stays
                events.log("error", where="answer pages", error=repr(exc))
            with self.lock:
                if self.waiting:
                    self.waiting -= 1
                else:
                    self.idle += 1


@functools.cache
def pumps(size: int) -> _Pumps:
    """The one pool of answer threads for events limited to ``size`` at once."""
    return _Pumps(size)


class _Latest:
    """The newest page of a streamed answer, handed from its thread to the reader."""

    def __init__(self):
        self.ready = threading.Condition()
        self.page, self.fresh, self.finished, self.error = None, False, False, None
        self.closed = False
        self.taken = time.monotonic()  # when the reader last asked for a page

    def put(self, **fields) -> None:
        with self.ready:
            for name, value in fields.items():
                setattr(self, name, value)
            self.ready.notify()


def paced(answers, render, first, interval: float = UI_UPDATE_S, wake: float = WAKE_S, workers: int = EVENTS_AT_ONCE, abandoned: float | None = None):  # fmt: skip
    """The pages of a streamed answer: ``first``, then ``render(state)`` of its states, at most
    one per ``interval`` besides the finished one and the last (an answer is one object that
    grows, so a skipped state is never lost), and the last page again after ``wake`` with
    nothing new.

    ``answers`` runs on one of ``workers`` reused threads (:func:`pumps`) and is rendered there,
    between its steps and only when a page is due, so that no page reads a state while it
    grows. Only the newest page is kept for the reader. Closing this generator closes
    ``answers`` at its next state, and so does a reader that asks for no page for
    ``abandoned`` seconds (default: the model's own backstop, ABANDONED_AFTER_S, which sees a
    reader while this thread reads); the caller's stop signal ends a step that gives none."""
    if abandoned is None:
        from assistant.generation.batch import ABANDONED_AFTER_S as abandoned
    latest = _Latest()

    def pump() -> None:
        pending, last = None, 0.0  # a state not rendered yet; when the last page was
        try:
            if latest.closed:  # cancelled while it waited for a thread
                return
            for answer in answers:
                now = time.monotonic()
                if latest.closed or now - latest.taken > abandoned:
                    return
                pending = answer
                if answer.done or now - last >= interval:
                    latest.put(page=render(answer), fresh=True)
                    pending, last = None, now
            if pending is not None:  # a stream that ended between pages
                latest.put(page=render(pending), fresh=True)
        except BaseException as exc:  # given to the reader, which raises it
            latest.put(error=exc)
        finally:
            try:
                answers.close()
            finally:
                latest.put(finished=True)

    pumps(workers).submit(pump)
    shown = first
    try:
        yield first
        while True:
            latest.taken = time.monotonic()
            with latest.ready:
                latest.ready.wait_for(lambda: latest.fresh or latest.finished, timeout=wake)
                fresh, page, finished, error = latest.fresh, latest.page, latest.finished, latest.error
                latest.fresh = False
            if error is not None:
                raise error
            if fresh:
                shown = page
            elif finished:
                return
            yield shown  # the new page, or the last one again after ``wake``
    finally:
        latest.closed = True
