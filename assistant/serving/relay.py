"""Running the API's answers, which are plain generators, from its async handlers.

Every answer the API admits holds a thread while it runs: a whole answer when it is not
streamed, one piece at a time when it is. asyncio's default pool has ``cpu_count + 4``
threads (six on a two-core server), so the seventh answer in progress used to wait for a
thread, unseen by the limits, while the model had room in its batch. The API now has a pool
of its own as large as what it admits (:class:`Threads`). A client that goes away stops its
answer within a token either way.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from concurrent.futures import ThreadPoolExecutor

from starlette.requests import Request

from assistant.serving.ratelimit import Slot

END = object()
"""What :meth:`Threads.relay` takes from the chunks when they run out."""


def finish(stop: threading.Event, slot: Slot) -> None:
    """The answer is over: stop its model and give its place in the queue back."""
    stop.set()
    slot.release()


async def disconnected(request: Request) -> None:
    """Return when the client goes away. ``Request.is_disconnected`` cannot tell behind a
    middleware (its zero-timeout peek is always cancelled), so this waits on the ASGI
    ``receive`` itself: once the body is read, the next message is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Threads:
    """The API's thread pool: ``admitted`` answers at once, each with a thread waiting for it.

    Twice as many threads as answers: an answer whose client went away keeps its thread for
    one more token after its place has gone to the next request. Threads start only when asked
    for, so the spare ones cost nothing."""

    def __init__(self, admitted: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=2 * admitted, thread_name_prefix="tsumugi-api")

    async def run(self, work, *args):
        """``work(*args)`` in one of the pool's threads, in a copy of this context (as
        ``asyncio.to_thread`` runs it)."""
        call = functools.partial(contextvars.copy_context().run, work, *args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def until_done(self, work, gone: asyncio.Future, stop: threading.Event):
        """Run ``work`` in a thread; when the client disconnects first (``gone``), stop it and
        return None. A model never runs on for a client that is gone: the stop event ends
        generation within a token, and the model is free for the next request."""
        task = asyncio.ensure_future(self.run(work))
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        stop.set()
        return None

    async def relay(self, request: Request, chunks, stop: threading.Event, slot: Slot):
        """Stream the sync ``chunks`` generator, watching for the client going away meanwhile
        (even while nothing is sent, as when a reply is held back for escalation)."""
        gone = asyncio.ensure_future(disconnected(request))
        try:
            while True:
                chunk = await self.until_done(lambda: next(chunks, END), gone, stop)
                if chunk is None or chunk is END:
                    return
                yield chunk
        finally:
            gone.cancel()
            finish(stop, slot)
