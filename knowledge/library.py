"""Several named knowledge bases under one data folder."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from knowledge.chunk import ChunkConfig
from knowledge.embed import DEFAULT_EMBED_MODEL
from knowledge.errors import StoreError, TsumugiError
from knowledge.names import check_name
from knowledge.store import KnowledgeBase

__all__ = ["Library", "check_name"]


class Library:
    """The knowledge bases in ``<data>/kbs``; hands out one shared object per base."""

    def __init__(self, data_dir: str | Path) -> None:
        self.root = Path(data_dir) / "kbs"
        self.root.mkdir(parents=True, exist_ok=True)
        self._open: dict[str, KnowledgeBase] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return sorted(
            (p.name for p in self.root.iterdir() if (p / "store.sqlite").exists()),
            key=str.casefold,
        )

    def exists(self, name: str) -> bool:
        try:
            name = check_name(name)
        except TsumugiError:
            return False  # no base can have a name that is refused
        return (self.root / name / "store.sqlite").exists()

    def create(
        self,
        name: str,
        embed_model: str = DEFAULT_EMBED_MODEL,
        chunking: ChunkConfig | None = None,
    ) -> KnowledgeBase:
        name = check_name(name)
        if self.exists(name):
            raise TsumugiError(f"A knowledge base called {name!r} already exists.")
        kb = self.get(name, create=True)
        kb.initialise(embed_model, chunking or ChunkConfig())
        return kb

    def get(self, name: str, create: bool = False) -> KnowledgeBase:
        name = check_name(name)
        with self._lock:
            if name in self._open:
                return self._open[name]
            if not create and not self.exists(name):
                known = ", ".join(self.names()) or "none yet"
                raise StoreError(
                    f"There is no knowledge base called {name!r} (existing: {known}); create it first."
                )
            kb = KnowledgeBase(self.root / name, name)
            self._open[name] = kb
            return kb

    def delete(self, name: str) -> None:
        name = check_name(name)
        with self._lock:
            kb = self._open.pop(name, None)
            if kb is not None:
                kb.close()
            if not self.exists(name):
                raise StoreError(f"There is no knowledge base called {name!r}.")
            # Rename first so a crash never leaves a half-deleted base that still lists.
            trash = self.root / f".deleted-{name}"
            shutil.rmtree(trash, ignore_errors=True)
            (self.root / name).rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
