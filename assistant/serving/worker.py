"""Entry point of a job's worker process: ``python -m assistant.serving.worker FOLDER JOB_ID DATA_DIR``.

The registry of job handlers lives here, at the top of the layers: the generic worker
(:mod:`assistant.jobs.worker`) is handed it, and no handler imports the worker.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Generator
from pathlib import Path
from typing import TypeVar

from assistant.answering.escalate import EscalationConfig
from assistant.config import Settings, escalation_key
from assistant.evaluation.runs import EvalConfig
from assistant.evaluation.sets import EvalSet
from assistant.generation.config import ModelConfig
from assistant.generation.remote import chat_endpoint
from assistant.jobs import worker
from assistant.serving.service import Tsumugi
from assistant.tuning.job import run_tune_job
from knowledge.progress import Progress, Relay

T = TypeVar("T")


def run_eval_job(
    request: dict, folder: Path, data_dir: Path, cancel: threading.Event
) -> Generator[Progress, None, dict]:
    """The worker side of ``Tsumugi.start_eval``: every configuration in turn, each run stored."""
    s = request["settings"]
    app = Tsumugi(
        Settings(
            data_dir=Path(s["data_dir"]),
            model_cache=Path(s["model_cache"]),
            model=ModelConfig(**s["model"]),
            embed_model=s["embed_model"],
            # The endpoint without its key: the worker reads the key from its environment.
            escalation=EscalationConfig(**s.get("escalation", {}), api_key=escalation_key()),
            chat=chat_endpoint(**s["chat"], api_key=os.environ.get("TSUMUGI_CHAT_KEY", ""))
            if s.get("chat")
            else None,
        ),
        model_choices=False,  # the models recorded with the job, whatever was chosen since
    )
    evalset = EvalSet.from_json(request["set"])
    configs = [EvalConfig(**c) for c in request["configs"]]
    run_ids = []
    for i, config in enumerate(configs, 1):
        run = yield from _labelled(
            app.evaluate(evalset, config, cancel), f"run {i}/{len(configs)} ({config.label()})"
        )
        run_ids.append(run.id)
    return {"runs": run_ids}


def _labelled(gen: Generator[Progress, None, T], label: str) -> Generator[Progress, None, T]:
    """``gen``'s events with ``label`` before their stage, and its result."""
    relay = Relay(gen)
    for event in relay:
        event.stage = f"{label}: {event.stage}"
        yield event
    return relay.result


HANDLERS: dict[str, worker.Handler] = {"tune": run_tune_job, "eval": run_eval_job}

INTERRUPTED = {
    "tune": "Training was cancelled; no adapter was saved.",
    "eval": "Evaluation was cancelled; the runs it had finished are stored, the one under way is not.",
}
"""What a job cancelled in the middle of a step (loading a model, a validation pass) says."""


if __name__ == "__main__":
    sys.exit(worker.main(sys.argv[1:], HANDLERS, INTERRUPTED))
