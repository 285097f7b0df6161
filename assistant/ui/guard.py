"""Role checks for Gradio handlers: every handler of the web app is wrapped so that the caller's
role (from the login, or the serving mode: see assistant.serving.access) is checked before it
runs, and each click is logged; a refusal (``gr.Error``) is told in the reader's language. A
handler with a keyword-only ``caller`` parameter is handed the
:class:`~assistant.serving.access.Caller`, so it can act for that person (drafts' authors,
visitors' limits); Gradio never sees that parameter."""

from __future__ import annotations

import contextlib
import inspect
import time

from assistant import events
from assistant.serving.access import Access
from assistant.ui.locale import in_readers_language
from knowledge.errors import ConfigError


class Forbidden(ConfigError):
    """The logged-in user's role does not allow the action."""


def require_role(fn, role: str, access: Access, quiet_outputs: int | None = None):
    """``fn`` as a Gradio handler that first checks the caller's role (from the login).

    The wrapper takes the ``gr.Request`` as its first parameter, which Gradio fills in; the
    original parameters follow unchanged, so inputs, progress trackers and generators work as
    before. A refused click says so. With ``quiet_outputs`` (handlers of page loads, timers and
    changes, which nobody clicked) a refused call changes nothing and says nothing, and allowed
    calls are not logged either (a timer would write a line a second).
    """
    import gradio as gr

    name = getattr(fn, "__name__", "handler")
    original = inspect.signature(fn)
    wants_caller = "caller" in original.parameters

    def allowed(request):
        """The caller when allowed; None (quiet) or an error (a click) when not."""
        username = getattr(request, "username", None) if request is not None else None
        caller = access.caller(username)
        if caller is not None and (role != "admin" or caller.is_admin):
            return caller
        if quiet_outputs is not None:
            return None
        events.log("denied", user=username, action=name, role=caller.role if caller else None)
        if not username:
            raise gr.Error("Log in to do this; ask an admin for an account.")
        raise gr.Error(f"Your account ({username}) is not allowed to do this; ask an admin.")

    def call_args(caller, kwargs: dict) -> dict:
        return {**kwargs, "caller": caller} if wants_caller else kwargs

    def nothing():
        skips = tuple(gr.skip() for _ in range(quiet_outputs or 0))
        return skips[0] if len(skips) == 1 else skips

    if inspect.isgeneratorfunction(fn):

        def wrapper(request, *args, **kwargs):
            try:
                caller = allowed(request)
                if caller is None:
                    yield nothing()
                    return None
                if quiet_outputs is not None:
                    return (yield from fn(*args, **call_args(caller, kwargs)))
                with _action(name, request):
                    return (yield from fn(*args, **call_args(caller, kwargs)))
            except gr.Error as exc:
                in_readers_language(exc, request)
                raise

    else:

        def wrapper(request, *args, **kwargs):
            try:
                caller = allowed(request)
                if caller is None:
                    return nothing()
                if quiet_outputs is not None:
                    return fn(*args, **call_args(caller, kwargs))
                with _action(name, request):
                    return fn(*args, **call_args(caller, kwargs))
            except gr.Error as exc:
                in_readers_language(exc, request)
                raise

    shown = [p for n, p in original.parameters.items() if n != "caller"]
    request_param = inspect.Parameter(
        "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request
    )
    wrapper.__signature__ = original.replace(parameters=[request_param, *shown])
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


def guard_functions(demo, fn_ids, role: str, access: Access) -> None:
    """Wrap the Gradio event handlers registered as ``fn_ids`` so only ``role`` may run them."""
    for fn_id in fn_ids:
        block_fn = demo.fns[fn_id]
        if block_fn.fn is None or getattr(block_fn.fn, "__tsumugi_role__", None):
            continue
        # A click or a submit is someone asking for the action: refuse it out loud. Anything
        # else (page load, timer, a shared dropdown changing) is refused silently.
        triggers = {target[1] for target in block_fn.targets}
        quiet = None if triggers & {"click", "submit"} else len(block_fn.outputs)
        block_fn.fn = require_role(block_fn.fn, role, access, quiet)
