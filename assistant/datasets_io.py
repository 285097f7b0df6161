"""Datasets in and out, through Hugging Face ``datasets``.

In: a folder written by ``Dataset.save_to_disk`` (or ``DatasetDict.save_to_disk``), or a hub
dataset id, already in the local cache or fetched when downloads are allowed; each becomes the
same :class:`~assistant.records.RecordTable` as an uploaded file, so the column mapping, the data
check and its errors are the same. Parquet files are read with the other uploaded tables
(:mod:`assistant.records`).

Out: rows (accepted drafts, evaluation sets, evaluation runs) as a Parquet file, a dataset
folder, or a dataset pushed to the hub.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from assistant.records import RECORD_EXTENSIONS, RecordTable, read_table, table_from_items
from knowledge.errors import ConfigError, ParseError
from knowledge.limits import IngestLimits, check_data_size

HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
"""A hub dataset id: ``name`` or ``owner/name``."""


def _datasets():
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def is_dataset_folder(path: Path) -> bool:
    """A folder ``save_to_disk`` wrote: one dataset, or a dictionary of splits."""
    return path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists())


def is_dataset_source(source: str | Path) -> bool:
    """Whether ``source`` names a dataset folder or a hub id rather than a file to upload."""
    path = Path(source)
    if path.exists():
        return is_dataset_folder(path)
    return bool(HUB_ID.fullmatch(str(source))) and path.suffix.lower() not in RECORD_EXTENSIONS


def read_dataset(
    source: str | Path,
    split: str | None = None,
    subset: str | None = None,
    limits: IngestLimits | None = None,
    allow_downloads: bool = False,
) -> RecordTable:
    """The rows of a dataset folder or a hub dataset (``subset`` is its configuration).

    A dictionary of splits needs ``split`` unless it has a ``train`` split or only one. The
    arrow data is memory-mapped and read a row at a time; its size is checked against
    ``limits.max_data_mb`` first, like an uploaded file's."""
    limits = limits or IngestLimits()
    datasets = _datasets()
    path = Path(source)
    if path.exists():
        if not is_dataset_folder(path):
            raise ParseError(
                f"{path.name} is a folder but not a saved dataset (no state.json or dataset_dict.json); "
                "point at the folder Dataset.save_to_disk wrote, or at a file."
            )
        name = path.name
        loaded = datasets.load_from_disk(str(path))
    else:
        name = str(source)
        loaded = _load_hub(datasets, name, split, subset, allow_downloads)
    if isinstance(loaded, datasets.DatasetDict):
        split = _choose_split(name, list(loaded), split)
        loaded, name = loaded[split], f"{name} ({split})"
    elif split and path.exists():
        raise ParseError(f"{name} is one dataset without splits; leave the split out.")
    size = sum(os.path.getsize(f["filename"]) for f in loaded.cache_files if os.path.exists(f["filename"]))
    check_data_size(name, size, limits)
    return table_from_items(iter(loaded), name, "it has no rows")


def _choose_split(name: str, splits: list[str], split: str | None) -> str:
    if split:
        if split not in splits:
            raise ParseError(f"{name} has no split {split!r}; its splits are {', '.join(splits)}.")
        return split
    if "train" in splits:
        return "train"
    if len(splits) == 1:
        return splits[0]
    raise ParseError(f"{name} has the splits {', '.join(splits)}; choose one (--split).")


def _load_hub(datasets, name: str, split: str | None, subset: str | None, allow_downloads: bool):
    """A hub dataset: from the local cache, or fetched when downloads are allowed."""
    if not HUB_ID.fullmatch(name):
        raise ParseError(f"{name} is neither a file, a saved dataset folder nor a hub dataset id.")
    try:
        return datasets.load_dataset(name, subset, split=split)
    except (ConnectionError, FileNotFoundError) as exc:
        if not allow_downloads:
            raise ParseError(
                f"The dataset {name!r} is not in the local Hugging Face cache; set "
                "TSUMUGI_ALLOW_DOWNLOADS=1 to fetch it, or save it to a folder with save_to_disk."
            ) from exc
        raise ParseError(f"The dataset {name!r} could not be fetched from the hub ({exc}).") from exc
    except ValueError as exc:  # an unknown configuration or split
        raise ParseError(f"The dataset {name!r} could not be loaded: {exc}") from exc


def load_table(
    source: str | Path,
    split: str | None = None,
    subset: str | None = None,
    limits: IngestLimits | None = None,
    allow_downloads: bool = False,
) -> RecordTable:
    """A table from a file (read within ``limits``, see :func:`assistant.records.read_table`),
    a saved dataset folder or a hub dataset."""
    if is_dataset_source(source):
        return read_dataset(source, split, subset, limits, allow_downloads)
    if split or subset:
        raise ParseError(f"{Path(source).name} is a file; a split or subset applies to datasets only.")
    return read_table(source, limits=limits)


def _flat(row: dict) -> dict:
    """Columns Parquet can hold in every row alike: lists and dicts become JSON text."""
    out = {}
    for key, value in row.items():
        if isinstance(value, list | dict | tuple):
            value = json.dumps(value, ensure_ascii=False)
        out[key] = value
    return out


def _dataset(rows: Iterable[dict]):
    """The rows as a dataset; a column whose rows hold values of different kinds (a number in
    one, "n/a" in another) is written as text, so every row is kept as it was."""
    rows = [_flat(r) for r in rows]
    if not rows:
        raise ConfigError("There is nothing to export yet.")
    # Every row gets every column (datasets takes the columns from the first row alone).
    columns = list(dict.fromkeys(key for row in rows for key in row))
    rows = [{key: row.get(key) for key in columns} for row in rows]
    kinds: dict[str, set] = {}
    for row in rows:
        for key, value in row.items():
            if value is not None:
                kinds.setdefault(key, set()).add(float if type(value) is int else type(value))
    mixed = {key for key, seen in kinds.items() if len(seen) > 1}
    if mixed:
        rows = [{k: str(v) if k in mixed and v is not None else v for k, v in r.items()} for r in rows]
    return _datasets().Dataset.from_list(rows)


def write_rows(rows: Iterable[dict], out: str | Path) -> Path:
    """``rows`` as a Parquet file (``out`` ending in .parquet), a zipped dataset folder (.zip)
    or a dataset folder (anything else). An earlier export at ``out`` is replaced only once the
    new one is complete; any other existing folder is refused, never emptied."""
    out = Path(out).resolve()
    if out.is_dir() and any(out.iterdir()) and not is_dataset_folder(out):
        raise ConfigError(
            f"{out} is a folder that holds other files; export into a new folder or a .parquet file."
        )
    dataset = _dataset(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        staged = Path(tmp) / "dataset"
        if out.suffix.lower() == ".parquet":
            dataset.to_parquet(str(staged))
        else:
            dataset.save_to_disk(str(staged))
            if out.suffix.lower() == ".zip":
                staged = Path(shutil.make_archive(str(staged), "zip", staged))
        if out.is_dir():  # an earlier export: set aside, removed with the temporary folder
            os.replace(out, Path(tmp) / "previous")
        os.replace(staged, out)
    return out


def push_rows(rows: Iterable[dict], repo: str, allow_downloads: bool) -> str:
    """Push ``rows`` to the hub as the private dataset ``repo``; returns its address.

    Refuses with one sentence when there is no network permission or no token, and when the
    hub cannot be reached."""
    if not allow_downloads:
        raise ConfigError(
            "Cannot push to the Hugging Face Hub: Tsumugi is offline (set TSUMUGI_ALLOW_DOWNLOADS=1 "
            "to let it use the network); the export itself can still be written with --out."
        )
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import RepositoryNotFoundError

    if not get_token():
        raise ConfigError(
            "Cannot push to the Hugging Face Hub: no token (set HF_TOKEN, or run `hf auth login`)."
        )
    dataset = _dataset(rows)
    try:
        try:  # push_to_hub keeps an existing repository's visibility: check it first
            public = not HfApi().repo_info(repo, repo_type="dataset").private
        except RepositoryNotFoundError:
            public = False
        if public:
            raise ConfigError(
                f"{repo} is a public dataset on the Hub; Tsumugi pushes only to private ones (choose another name)."
            )
        dataset.push_to_hub(repo, private=True)
    except ConfigError:
        raise
    except Exception as exc:  # network, permission and naming errors all end the push
        raise ConfigError(
            f"Could not push to {repo!r} on {constants.ENDPOINT} ({exc.__class__.__name__}); "
            "check the network, the token's write permission and the repository name."
        ) from exc
    return f"{constants.ENDPOINT}/datasets/{repo}"
