"""Trained LoRA adapters under ``<data>/adapters/<name>/``: list, rename, delete, export.

An adapter folder is valid only when it holds the peft files and ``card.json``. Training
writes into a hidden ``.tmp-<job>`` folder and renames it into place at the very end, so a
cancelled or killed run never lists a half-written adapter.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from knowledge.errors import StoreError
from knowledge.files import atomic_write_bytes
from knowledge.library import check_name

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "card.json")


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    path: Path
    card: dict

    @property
    def base_model(self) -> str:
        return str(self.card.get("base_model", ""))

    def summary(self) -> str:
        m = self.card.get("metrics", {})
        before, after = m.get("val_loss_before"), m.get("val_loss_after")
        loss = (
            f"validation loss {before:.2f} → {after:.2f}" if before is not None and after is not None else ""
        )
        return " · ".join(p for p in (self.base_model, self.card.get("created", ""), loss) if p)


class AdapterStore:
    def __init__(self, data_dir: str | Path) -> None:
        self.root = Path(data_dir) / "adapters"
        self.root.mkdir(parents=True, exist_ok=True)

    def _valid(self, folder: Path) -> bool:
        return not folder.name.startswith(".") and all((folder / f).exists() for f in ADAPTER_FILES)

    def names(self) -> list[str]:
        return sorted((p.name for p in self.root.iterdir() if self._valid(p)), key=str.casefold)

    def exists(self, name: str) -> bool:
        return self._valid(self.root / name)

    def get(self, name: str) -> AdapterInfo:
        name = check_name(name, "adapter")
        folder = self.root / name
        if not self._valid(folder):
            known = ", ".join(self.names())
            now = f"the adapters now are {known}" if known else "there are no adapters now"
            raise StoreError(f"There is no adapter called {name!r}; {now}.")
        card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
        return AdapterInfo(name, folder, card)

    def list(self) -> list[AdapterInfo]:
        return [self.get(n) for n in self.names()]

    def check_new_name(self, name: str) -> str:
        name = check_name(name, "adapter")
        if (self.root / name).exists():
            raise StoreError(f"An adapter called {name!r} already exists; choose another name or delete it.")
        return name

    def staging(self, job_id: str) -> Path:
        """An empty hidden folder for a run to write into."""
        folder = self.root / f".tmp-{job_id}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def commit(self, staging: Path, name: str, card: dict) -> AdapterInfo:
        """Write the card, then move the staged folder into place in one rename."""
        name = self.check_new_name(name)
        atomic_write_bytes(
            staging / "card.json", json.dumps(card, ensure_ascii=False, indent=2).encode("utf-8")
        )
        os.replace(staging, self.root / name)
        return self.get(name)

    def discard_staging(self, keep: set[str] = frozenset()) -> int:
        """Remove staged folders of runs that are not in ``keep`` (job ids still running)."""
        removed = 0
        for folder in self.root.glob(".tmp-*"):
            if folder.name[len(".tmp-") :] not in keep:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        for folder in self.root.glob(".deleted-*"):
            shutil.rmtree(folder, ignore_errors=True)
        return removed

    def rename(self, old: str, new: str) -> AdapterInfo:
        info = self.get(old)
        new = self.check_new_name(new)
        card = dict(info.card, name=new)
        atomic_write_bytes(info.path / "card.json", json.dumps(card, ensure_ascii=False, indent=2).encode())
        os.replace(info.path, self.root / new)
        return self.get(new)

    def delete(self, name: str) -> None:
        info = self.get(name)
        trash = self.root / f".deleted-{info.name}-{time.time_ns()}"
        os.replace(info.path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def zip(self, name: str, out_dir: str | Path) -> Path:
        """The adapter folder as ``<name>.zip`` in ``out_dir`` (peft files, card, comparison)."""
        info = self.get(name)
        out = Path(out_dir) / f"{info.name}.zip"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".zip.tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(info.path.iterdir()):
                if path.is_file():
                    zf.write(path, f"{info.name}/{path.name}")
        os.replace(tmp, out)
        return out

    def merge(self, name: str, out_dir: str | Path, model_cache: str | Path) -> Path:
        """Merge the adapter into its base model and save a standalone folder.

        The folder (safetensors weights, tokenizer, chat template) loads with plain
        ``transformers`` and gives the same greedy output as the app with the adapter, which
        merges the same way in fp32.
        """
        from assistant.generation.local import load_merged

        info = self.get(name)
        out = Path(out_dir)
        if out.exists() and any(out.iterdir()):
            raise StoreError(f"{out} already exists and is not empty; choose an empty or new folder.")
        model, tokenizer = load_merged(info.base_model, info.path, Path(model_cache))
        tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.copy2(info.path / "card.json", tmp / "tsumugi-card.json")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
        return out
