"""What the UI, the CLI and the API share: settings, knowledge bases and loaded models."""

from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path

from assistant.answer import Answer, AnswerConfig, answer_question
from assistant.config import Settings, prepare_environment
from assistant.models import ChatModel, ModelConfig, load_chat_model
from knowledge.ingest import FileResult, Source, collect_sources, ingest_files
from knowledge.library import Library
from knowledge.progress import Progress
from knowledge.retrieve import Hit, RetrievalConfig, retrieve
from knowledge.store import KnowledgeBase


class Tsumugi:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        prepare_environment(self.settings)
        self.library = Library(self.settings.data_dir)

    def knowledge_base(self, name: str, create: bool = False) -> KnowledgeBase:
        if create and not self.library.exists(name):
            return self.library.create(name, embed_model=self.settings.embed_model)
        return self.library.get(name)

    def chat_model(self, config: ModelConfig | None = None) -> ChatModel:
        return load_chat_model(config or self.settings.model, Path(self.settings.model_cache))

    def ingest(
        self,
        kb_name: str,
        paths: list[str | Path] | list[Source],
        cancel: threading.Event | None = None,
    ) -> Generator[Progress, None, list[FileResult]]:
        """Add files and folders (or ready-made sources) to a knowledge base, created if missing."""
        kb = self.knowledge_base(kb_name, create=True)
        if all(isinstance(p, Source) for p in paths):
            sources = list(paths)
        else:
            sources = collect_sources(paths)  # type: ignore[arg-type]
        return (yield from ingest_files(kb, sources, cancel, max_pages=self.settings.max_pages))

    def search(self, kb_name: str, query: str, config: RetrievalConfig | None = None) -> list[Hit]:
        return retrieve(self.library.get(kb_name), query, config)

    def ask(
        self,
        kb_name: str,
        question: str,
        history: list[tuple[str, str]] | None = None,
        config: AnswerConfig | None = None,
        model: ModelConfig | None = None,
        stop: threading.Event | None = None,
    ) -> Generator[Answer, None, Answer]:
        kb = self.library.get(kb_name)
        return (yield from answer_question(kb, self.chat_model(model), question, history, config, stop))
