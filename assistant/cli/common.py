"""What the command-line commands share: terminal progress (tqdm), and how an answer's outcome
and a background job are shown."""

from __future__ import annotations

import sys
import time
from collections.abc import Generator
from typing import TypeVar

from knowledge.progress import Progress, drive_events

T = TypeVar("T")


class ProgressPrinter:
    """Progress on stderr through tqdm: a bar, then the stage's own line of counts and time left
    (``Progress.describe``: training's estimate comes from its steps, which tqdm cannot see).
    tqdm draws in place on a terminal; a redraw comes at most twice a second, also when only the
    line changes (chunks embedded while the file count stands still); close() draws the last."""

    def __init__(self, stream=sys.stderr, interval: float = 0.5) -> None:
        self.stream = stream
        self.interval = interval
        self.bar = None
        self._last = 0.0

    def show(self, event: Progress) -> None:
        from tqdm import tqdm

        if self.bar is None or event.total != self.bar.total:
            self.close()
            self.bar = tqdm(
                total=event.total,
                file=self.stream,
                mininterval=0.5,
                ascii=".#",
                bar_format="[{bar:24}] {desc}",
            )
        self.bar.set_description_str(event.describe(), refresh=False)
        self.bar.n = event.done
        now = time.monotonic()
        if now - self._last >= self.interval:  # the final state is drawn by close()
            self.bar.refresh()
            self._last = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def drive(gen: Generator[Progress, None, T], printer: ProgressPrinter | None) -> T:
    """Run a progress generator to its end, showing each event; return its result."""
    try:
        return drive_events(gen, printer.show if printer else None)
    finally:
        if printer:
            printer.close()


def retrieval_config(args, cutoff: bool):
    from knowledge.retrieve import RetrievalConfig

    return RetrievalConfig(top_k=args.top_k, mode=args.mode, cutoff=cutoff)


def style_argument(parser) -> None:
    from assistant.answering.styles import DEFAULT_STYLE, STYLES

    parser.add_argument(
        "--style",
        choices=STYLES,
        default=DEFAULT_STYLE,
        help="quote: the documents' sentences, cited; concise: a short answer the model writes, "
        "checked against the documents; detailed: a longer checked answer",
    )


def outcome_line(answer) -> str:
    """Confidence, who answered and whether a person should check it, in one line."""
    from assistant.answering.confidence import label

    parts = []
    if answer.confidence is not None:
        parts.append(f"confidence {answer.confidence:.2f} ({label(answer.confidence)})")
    parts.append(f"answered by {answer.model}")
    if answer.escalated:
        parts.append(f"escalated from {answer.first_model}")
    if answer.needs_review:
        parts.append("NEEDS REVIEW")
    if answer.sub_questions:
        parts.append(f"split into {len(answer.sub_questions)} sub-questions")
    line = " · ".join(parts)
    return line + (f"\n{answer.notice}" if answer.notice else "")


def follow_job(app, job, quiet: bool = False):
    """Show a job's progress until it ends; Ctrl-C cancels it. Returns the finished job."""
    printer = None if quiet else ProgressPrinter()
    offset = 0
    try:
        while True:
            events, offset = app.jobs.events(job.id, offset)
            for event in events:
                if event["type"] == "progress" and printer:
                    printer.show(Progress(**{k: v for k, v in event.items() if k not in ("t", "type")}))
            job = app.jobs.get(job.id)
            if not job.active:
                events, offset = app.jobs.events(job.id, offset)
                return job
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\ncancelling…", file=sys.stderr)
        app.jobs.cancel(job.id)
        return app.jobs.wait(job.id, timeout=60)
    finally:
        if printer:
            printer.close()


def dataset_arguments(parser) -> None:
    """--split and --subset, for data given as a dataset folder or a hub dataset id."""
    parser.add_argument("--split", help="the dataset's split (default: train, or its only split)")
    parser.add_argument("--subset", help="the hub dataset's subset (configuration)")
