"""Small helpers shared by the tabs: formatting only, no logic."""

from __future__ import annotations

import html
import inspect
import threading
import time
from pathlib import Path

from assistant.ui.locale import progress_text, say, told, translated
from knowledge.lexical import is_japanese
from knowledge.retrieve import Hit

EVENTS_AT_ONCE = 8
"""How many runs of one web-app event go on at once (Gradio's queue), unless raised below."""


def answering(app) -> dict:
    """The limit of the events that write answers (Chat's two triggers, Draft): one group, as
    many at once as the model's running batch takes (TSUMUGI_MAX_BATCH), and never fewer than
    any other event. The limit per event used to keep the ninth agent waiting while the batch
    had room; a batch of one still lets eight retrieve at once."""
    limit = max(EVENTS_AT_ONCE, app.settings.model.max_batch)
    return {"concurrency_limit": limit, "concurrency_id": "answering"}


def upload_path(upload) -> Path | None:
    """The local path of a Gradio upload (a path string or a file object), or None."""
    if not upload:
        return None
    return Path(upload if isinstance(upload, str) else upload.name)


EXPORT_FORMATS = [("Parquet", ".parquet"), ("Dataset folder (zip; load_from_disk reads it unzipped)", ".zip")]
"""How the UI exports rows: one Parquet file, or a zipped ``save_to_disk`` folder."""


def export_file(app, rows: list[dict], stem: str, suffix: str) -> str:
    """``rows`` written under the data directory's exports as ``suffix`` (see EXPORT_FORMATS),
    for a download button."""
    import time

    from assistant.datasets_io import write_rows

    name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}{suffix}"
    return str(write_rows(rows, Path(app.settings.data_dir).resolve() / "exports" / name))


def passage_location(hit: Hit) -> str:
    where = hit.doc + (f", page {hit.page}" if hit.page else "")
    return where + (f" · {hit.heading}" if hit.heading else "")


def _passage_block(n: int, hit: Hit, limit: int) -> str:
    excerpt = html.escape(hit.text.strip())
    if len(excerpt) > limit:
        excerpt = excerpt[:limit].rsplit(" ", 1)[0] + " …"
    quoted = "\n".join("> " + line if line.strip() else ">" for line in excerpt.splitlines())
    return f"**[{n}] {html.escape(passage_location(hit))}**\n\n{quoted}"


def sources_markdown(passages: list[Hit], cited: list[int], done: bool = True, japanese: bool = False) -> str:
    """The sources panel: cited passages in full view, the other retrieved ones folded away.
    Until the answer is ``done``, an answer citing nothing yet is not said to cite nothing.
    ``japanese``: the question was, so the panel's notes are too."""
    if not passages:
        return (
            say("_No passages from the documents were relevant to this question._", japanese) if done else ""
        )
    shown = [_passage_block(n, passages[n - 1], 700) for n in cited]
    others = [n for n in range(1, len(passages) + 1) if n not in cited]
    nothing = (
        say("_The answer cites no passage._", japanese) if done else say("_No passage cited yet._", japanese)
    )
    parts = [say("### Cited sources", japanese), *shown] if shown else [nothing]
    if others:
        folded = "\n\n".join(_passage_block(n, passages[n - 1], 300) for n in others)
        summary = say("{n} more retrieved passage(s), not cited", japanese, n=len(others))
        parts.append(f"<details><summary>{summary}</summary>\n\n{folded}\n\n</details>")
    return "\n\n".join(parts)


_BADGE_COLOURS = {"high": "#15803d", "medium": "#b45309", "low": "#b91c1c", "unknown": "#6b7280"}


BASE_MODEL_CHOICE = ("none: the base model", "")


def adapter_choices(app) -> list[tuple[str, str]]:
    """The choices of an adapter selector (Chat, Draft): the base model, then each adapter."""
    return [BASE_MODEL_CHOICE] + [(n, n) for n in app.adapters.names()]


def adapter_change(old: str, new: str | None) -> dict:
    """What the Tune tab tells the other tabs' adapter selectors (through one shared
    ``gr.State``) when it renames ``old`` to ``new`` or deletes it (``new`` None). The time
    makes each change a new value, so the state's change event fires every time."""
    return {"old": old, "new": new, "at": time.time_ns()}


def followed(chosen: str | None, change: dict | None, names: list[str]) -> str:
    """A selector's choice after an adapter change: the new name if it chose the renamed
    adapter, the base model ("") if its adapter was deleted or is otherwise gone."""
    if change and chosen == change["old"]:
        return change["new"] or ""
    return chosen if chosen in names else ""


def follow_adapters(app, change: dict | None, chosen: str | None):
    """An adapter selector (Chat, Draft) after the Tune tab renamed or deleted an adapter: the
    current adapters, and its choice followed (a stale choice made every Send fail)."""
    import gradio as gr

    choices = adapter_choices(app)
    return gr.update(choices=choices, value=followed(chosen, change, [value for _, value in choices]))


def confidence_badge(answer) -> str:
    """Confidence as a coloured badge, with the review and escalation marks."""
    from assistant.answering.confidence import label

    japanese = is_japanese(answer.question)
    word = label(answer.confidence)
    value = "" if answer.confidence is None else f" {answer.confidence:.2f}"
    badges = [
        f"<span style='background:{_BADGE_COLOURS[word]};color:white;border-radius:4px;padding:1px 6px'>"
        + say("confidence {word}{value}", japanese, word=say(word, japanese), value=value)
        + "</span>"
    ]
    if answer.needs_review:
        badges.append(
            "<span style='background:#fef3c7;color:#92400e;border-radius:4px;padding:1px 6px'>"
            + say("⚠ needs review", japanese)
            + "</span>"
        )
    if answer.escalated:
        badges.append(
            "<span style='background:#e0e7ff;color:#3730a3;border-radius:4px;padding:1px 6px'>"
            + say("↗ escalated to {model}", japanese, model=html.escape(answer.model))
            + "</span>"
        )
    return " ".join(badges)


def shown_answer(answer) -> str:
    """The answer for the chat, with the documents' own words as quotations (Markdown ``>``)."""
    if not answer.done or not answer.segments or answer.method == "generated" or not answer.covered:
        return answer.text
    blocks: list[str] = []
    for segment in answer.segments:
        text = segment["text"].strip()
        if segment["quoted"]:
            blocks.append("\n".join("> " + line if line.strip() else ">" for line in text.splitlines()))
        elif blocks and not blocks[-1].startswith(">"):
            blocks[-1] += " " + text
        else:
            blocks.append(text)
    return "\n\n".join(blocks)


def answer_footer(answer) -> str:
    """Which model answered, how sure and how fast, under the sources."""
    # The quote style itself: no model ran (a concise or detailed answer replaced by quotes did).
    quote_style = answer.style == "quote" and answer.method == "quoted" and not answer.escalated
    japanese = is_japanese(answer.question)
    if not answer.covered:
        parts = [say("Not sent to the model", japanese)]
    elif quote_style:
        # Not "answered by" the model and adapter chosen: neither ran, so a user comparing
        # adapters here would see no difference and conclude tuning did nothing.
        parts = [
            say(
                "Quoted from the documents; no model wrote it. For an answer written by `{model}`, "
                "choose Concise or Detailed as the Answer style (in Chat, under Settings)",
                japanese,
                model=answer.model,
            )
        ]
    else:
        parts = [say("Answered by `{model}`", japanese, model=answer.model)]
    if answer.escalated:
        parts[0] += say(" (the small model `{model}` was unsure)", japanese, model=answer.first_model)
    if answer.sub_questions:
        parts.append(say("split into {n} sub-questions", japanese, n=len(answer.sub_questions)))
    if answer.covered and answer.method == "checked":
        parts.append(say("quoted from the documents: the indented parts", japanese))
    elif answer.covered and answer.method == "quoted" and not quote_style:
        parts.append(say("quoted from the documents", japanese))  # what the model wrote did not hold up
    timings = answer.timings
    if "first_token_s" in timings:
        parts.append(say("first token {seconds} s", japanese, seconds=f"{timings['first_token_s']:.1f}"))
    if "total_s" in timings:
        parts.append(say("total {seconds} s", japanese, seconds=f"{timings['total_s']:.1f}"))
    notice = f"\n\n_{html.escape(answer.notice)}_" if answer.notice else ""
    return confidence_badge(answer) + "\n\n<sub>" + " · ".join(parts) + "</sub>" + notice


JOB_STATE_LABEL = {
    "queued": "⏳ waiting for the device",
    "running": "⚙️ running",
    "done": "✅ finished",
    "failed": "❌ failed",
    "cancelled": "⏹ cancelled",
    "interrupted": "⚠️ interrupted",
}


def _job_result(result: dict) -> str:
    """A finished job's outcome in a few words, in the reader's language."""
    if "adapter" in result:
        return told(
            "adapter {name}: validation loss {before} → {after}",
            name=result["adapter"],
            before=f"{result['val_loss_before']:.3f}",
            after=f"{result['val_loss_after']:.3f}",
        )
    if "runs" in result:
        return told("{n} run(s) stored; choose them under Runs to compare", n=len(result["runs"]))
    return ""


def job_progress_html(job, empty: str = "No job yet.") -> str:
    """A background job as a progress bar with its state, counts, speed, time left and error."""
    from knowledge.progress import Progress

    if job is None:
        return f"<p>{html.escape(translated(empty))}</p>"
    p = job.progress or {}
    fraction = 0.0 if not p.get("total") else min(1.0, p["done"] / p["total"])
    if job.state == "done":
        fraction = 1.0
    parts = [translated(JOB_STATE_LABEL.get(job.state, job.state))]
    if p and job.active:
        event = Progress(**{k: v for k, v in p.items() if k in Progress.__dataclass_fields__})
        parts.append(progress_text(event))
        if (event.metrics or {}).get("tokens_per_s"):
            parts.append(f"{event.metrics['tokens_per_s']:.0f} tokens/s")
    if job.state == "done" and job.result and _job_result(job.result):
        parts.append(_job_result(job.result))
    error = f"<p style='color:#b91c1c'>{html.escape(translated(job.error))}</p>" if job.error else ""
    return (
        f"<div><b>{html.escape(job.request.get('name', ''))}</b> ({html.escape(job.id)})</div>"
        f"<div style='background:#e5e7eb;border-radius:6px;height:14px;margin:6px 0'>"
        f"<div style='background:#6366f1;height:14px;border-radius:6px;width:{fraction * 100:.1f}%'></div></div>"
        f"<div>{' · '.join(html.escape(part) for part in parts)}</div>{error}"
    )


def _told(error) -> None:
    """Leave ``error`` with no traceback in the server log when it is a user's mistake or
    a refusal (raised by the handler itself, or from an error of the core other than the
    model failing): an admin reads a traceback there as a crash, and a real one must stay."""
    from assistant.generation.backend import ModelError
    from knowledge.errors import TsumugiError

    cause = error.__cause__
    if cause is None or (isinstance(cause, TsumugiError) and not isinstance(cause, ModelError)):
        error.print_exception = False


def handler(fn, app):
    """``fn(app, *inputs)`` as the Gradio handler ``(*inputs)`` for this app.

    Handlers are named module-level functions that take the app first, so they can be called
    and tested without a server; this binds the app while keeping the name (the role guard
    logs it) and the remaining signature (Gradio reads it for progress trackers). A
    ``gr.Error`` for a user's mistake or a refusal leaves no traceback in the log (:func:`_told`)."""
    import gradio as gr

    signature = inspect.signature(fn)
    if inspect.isgeneratorfunction(fn):

        def bound(*args, **kwargs):
            try:
                return (yield from fn(app, *args, **kwargs))
            except gr.Error as exc:
                _told(exc)
                raise

    else:

        def bound(*args, **kwargs):
            try:
                return fn(app, *args, **kwargs)
            except gr.Error as exc:
                _told(exc)
                raise

    bound.__name__ = bound.__qualname__ = fn.__name__
    bound.__doc__ = fn.__doc__
    bound.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    return bound


class CancelFlag(threading.Event):
    """A Stop or Cancel button's flag for one browser session: ``gr.State`` deep-copies its
    initial value for each session, and a copy is a new flag (an Event itself cannot be copied).

    ``armed`` from the click that starts the work (before it waits its turn in the queue) until
    the work ends: a Stop then counts, even for work still waiting, and reaches every step of
    it (decomposition, retrieval, generation); one at any other time is not kept for the next."""

    armed = False
    round = 0
    """Counts the clicks that armed it: a request's stop belongs to its own click."""

    def __deepcopy__(self, memo) -> CancelFlag:
        return CancelFlag()


KB_FIRST = "Choose a knowledge base (or create one in the Knowledge tab) first."


def refuse_unready(app, text: str | None, kb_name: str | None, empty: str, adapter: str = "") -> None:
    """The mistakes made most often, refused in one sentence: nothing typed (``empty`` says
    what to type), no knowledge base chosen, an adapter chosen that is gone (renamed or
    deleted since the page loaded, perhaps in another browser)."""
    import gradio as gr

    if not (text or "").strip():
        raise gr.Error(empty)
    if not kb_name:
        raise gr.Error(KB_FIRST)
    if adapter and not app.adapters.exists(adapter):
        now = ", ".join(app.adapters.names()) or "none"
        raise gr.Error(
            f"The adapter {adapter} no longer exists (renamed or deleted); choose another as the "
            f"tuned adapter (adapters now: {now})."
        )


def refuse_untyped(chosen: str | None, typed: str | None, refusal: str) -> None:
    """A delete goes ahead only once the chosen thing's exact name is typed; ``refusal`` says so."""
    import gradio as gr

    if not chosen or (typed or "").strip() != chosen:
        raise gr.Error(refusal)


def arm_cancel(app, flag: CancelFlag | None) -> None:
    """Runs at the click that starts the work, unqueued: from now on Stop is meant for it."""
    if flag is not None:
        flag.clear()
        flag.round += 1
        flag.armed = True


class StopSignal(threading.Event):
    """One request's stop: set by its own ending (a closed generator), or by the session's Stop
    button when that ``flag`` was armed for this request. A flag left set by an earlier Stop,
    or never armed (an API client calling the handler directly), does not stop it."""

    def __init__(self, flag: CancelFlag | None = None) -> None:
        super().__init__()
        self.flag = flag if flag is not None and flag.armed else None
        self.round = flag.round if self.flag is not None else 0
        self._pressed = False

    def is_set(self) -> bool:
        # Latched: the next question's click clears the session's flag, and must not undo
        # this stop; nor may a Stop meant for the next question reach this one.
        if (
            not self._pressed
            and self.flag is not None
            and self.flag.round == self.round
            and self.flag.is_set()
        ):
            self._pressed = True
            super().set()
        return super().is_set()

    @property
    def pressed(self) -> bool:
        """Whether the session's Stop button stopped this request."""
        self.is_set()
        return self._pressed

    def finish(self) -> None:
        """The request is over: stop whatever still runs for it, and disarm the button (unless
        a newer question armed it)."""
        self.set()
        if self.flag is not None and self.flag.round == self.round:
            self.flag.armed = False


STOPPED = "_Stopped: this answer is unfinished._"
"""What a stopped answer or draft shows under what it had written."""


def stop_now(app, flag: CancelFlag | None) -> None:
    """Stop this session's answer or draft: the model stops within a token, and the answer's
    own event ends with a page saying so. (Cancelling that event instead left the last page
    as it was, "…" for good when no word had come, and Gradio sometimes marked the chat, the
    sources and the question box "Error" and showed no conversation.)"""
    if flag is not None and flag.armed:
        flag.set()


def shown_progress(progress):
    """A progress event handler that moves a ``gr.Progress`` bar, with counts and the ETA."""

    def show(event) -> None:
        progress(event.fraction, desc=progress_text(event))

    return show
