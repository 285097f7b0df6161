"""One tuning run as a job: read the data, train, write the adapter with its card.

``prepare_tune`` runs in the app before a job starts, so a bad file or name is reported at
once; ``run_tune_job`` runs in the worker process.
"""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from collections.abc import Generator
from pathlib import Path

from assistant.tuning.adapters import AdapterStore
from assistant.tuning.data import (
    TrainingData,
    from_drafts,
    from_knowledge_base,
    load_pairs,
    pairs_from_table,
)
from assistant.tuning.train import TuneConfig, train_lora
from knowledge.errors import ConfigError, ParseError
from knowledge.files import now
from knowledge.limits import IngestLimits
from knowledge.progress import Clock, Progress

DATA_FILE = "training-data"
CHECKED = IngestLimits(max_data_mb=math.inf, max_unpacked_mb=math.inf, max_ratio=math.inf, parse_timeout_s=0)
"""How the worker reads the copy of the data in its job folder: ``prepare_tune`` read the same
file within the server's limits before the job was queued, and the worker is a process of its
own, so it reads the copy as it is (the server's settings do not reach it)."""


def data_source(
    kind: str,
    kb: str | None = None,
    path: str | Path | None = None,
    question_column: str | None = None,
    answer_column: str | None = None,
    split: str | None = None,
    subset: str | None = None,
) -> dict:
    """A tuning request's ``data`` entry: a question/answer ``file``, a ``dataset`` (a saved
    dataset folder or a hub id in ``path``, with its ``split`` and ``subset``), a knowledge
    base's passages (``kb``), or accepted reply ``drafts`` (of ``kb``, or of all bases). The UI
    and the CLI both describe their choice with it."""
    if kind == "dataset":
        if not path:
            raise ConfigError("Name the dataset: a folder written by save_to_disk, or a hub dataset id.")
        return {
            "kind": "dataset",
            "path": str(path),
            "name": Path(path).name or str(path),
            "split": split or None,
            "subset": subset or None,
            "question_column": question_column or None,
            "answer_column": answer_column or None,
        }
    if kind == "drafts":
        return {"kind": "drafts", "kb": kb or None}
    if kind == "kb":
        if not kb:
            raise ConfigError("Choose the knowledge base whose documents to learn from.")
        return {"kind": "kb", "kb": kb}
    if kind != "file":
        raise ConfigError(f"Training data comes from a file, a knowledge base or drafts, not {kind!r}.")
    if path is None:
        raise ConfigError("Upload a CSV, TSV, XLSX or JSONL file of question/answer pairs first.")
    return {
        "kind": "file",
        "path": str(path),
        "name": Path(path).name,
        "question_column": question_column or None,
        "answer_column": answer_column or None,
    }


def load_training_data(
    request: dict,
    folder: Path | None,
    data_dir: Path,
    limits: IngestLimits | None = None,
    allow_downloads: bool = False,
) -> TrainingData:
    """The data a request names: an uploaded file (copied into the job folder) or a knowledge base.

    Without ``folder`` (in the server) a file is read within ``limits`` (the defaults when None:
    size, zip bombs, time and memory); with it (in the worker) the checked copy is read."""
    source = request.get("data", {})
    kind = source.get("kind")
    if kind == "file":
        path = Path(source["path"]) if folder is None else folder / DATA_FILE
        return load_pairs(
            path,
            source.get("question_column") or None,
            source.get("answer_column") or None,
            name=source.get("name") or Path(source["path"]).name,
            limits=limits if folder is None else CHECKED,
        )
    if kind in ("drafts", "dataset") and folder is not None:  # the snapshot taken at submission
        name = "accepted-drafts.jsonl" if kind == "drafts" else f"{source['name']}.jsonl"
        return load_pairs(folder / DATA_FILE, name=name, limits=CHECKED)
    if kind == "dataset":
        from assistant.datasets_io import read_dataset

        table = read_dataset(
            source["path"], source.get("split"), source.get("subset"), limits, allow_downloads
        )
        return pairs_from_table(table, source.get("question_column"), source.get("answer_column"))
    if kind == "drafts":
        from assistant.drafting.store import DraftStore

        return from_drafts(DraftStore(data_dir), source.get("kb") or None)
    if kind == "kb":
        from knowledge.library import Library

        return from_knowledge_base(Library(data_dir).get(source["kb"]))
    raise ParseError(
        "Choose the training data: a file of question/answer pairs, accepted reply drafts, or a knowledge base."
    )


def prepare_tune(
    request: dict, data_dir: Path, limits: IngestLimits | None = None, allow_downloads: bool = False
) -> tuple[TrainingData, TuneConfig]:
    """Check everything a run needs before it starts, the data file within ``limits`` (the
    server's: TSUMUGI_MAX_DATA_MB and the parse limits); raises a clear error otherwise. A hub
    dataset not in the cache is fetched only when ``allow_downloads``."""
    from assistant.generation.config import check_model_available

    AdapterStore(data_dir).check_new_name(request.get("name", ""))
    config = TuneConfig(**request.get("config", {}))
    check_model_available(request.get("base") or "smollm2-135m-instruct")
    data = load_training_data(request, None, data_dir, limits, allow_downloads)
    data.check()
    return data, config


def run_tune_job(
    request: dict, folder: Path, data_dir: Path, cancel: threading.Event
) -> Generator[Progress, None, dict]:
    from assistant.generation.config import resolve_model_source

    started = time.time()
    config = TuneConfig(**request.get("config", {}))
    data = load_training_data(request, folder, data_dir)
    train, validation = data.split(config.validation_fraction, config.min_validation, config.seed)
    adapters = AdapterStore(data_dir)
    name = adapters.check_new_name(request["name"])
    base = request.get("base") or "smollm2-135m-instruct"
    yield Clock().event("preparing model", 0, 1, "steps", base)
    source = resolve_model_source(base, Path(request["model_cache"]))
    staging = adapters.staging(folder.name)
    try:
        metrics = yield from train_lora(source, train, validation, config, staging, cancel)
        comparison = metrics.pop("comparison", [])
        (staging / "comparison.json").write_text(
            json.dumps(comparison, ensure_ascii=False, indent=2), encoding="utf-8"
        )
        card = {
            "name": name,
            "base_model": base,
            "created": now(),
            "job": folder.name,
            "data": {
                "source": data.name,
                "kind": data.report.kind,
                "sha256": data.sha256,
                "examples": len(data.examples),
                "train": len(train),
                "validation": len(validation),
                "warnings": data.report.warnings(),
            },
            "settings": config.to_json(),
            "metrics": metrics,
            "duration_s": round(time.time() - started, 1),
        }
        info = adapters.commit(staging, name, card)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        "adapter": info.name,
        "val_loss_before": metrics["val_loss_before"],
        "val_loss_after": metrics["val_loss_after"],
        "tokens_per_s": metrics["tokens_per_s"],
    }
