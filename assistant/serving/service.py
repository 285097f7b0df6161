"""What the UI, the CLI and the API share: settings, knowledge bases and loaded models."""

from __future__ import annotations

import json
import threading
from collections.abc import Generator
from dataclasses import replace
from pathlib import Path

import filelock

from assistant import events
from assistant.answering.answer import Answer, AnswerConfig, answer_question
from assistant.config import Settings, prepare_environment
from assistant.drafting.compose import DraftConfig, draft_reply
from assistant.drafting.store import DraftStore
from assistant.evaluation.runs import EvalConfig, EvalRun, EvalRunStore, run_evaluation
from assistant.evaluation.sets import EvalSet, EvalSetStore
from assistant.generation.backend import ChatBackend, ModelError
from assistant.generation.cache import forget_models, load_chat_model
from assistant.generation.catalog import ModelEntry, check_fits, describe, list_models, pull
from assistant.generation.config import ModelConfig, check_model_available
from assistant.generation.remote import remote_model
from assistant.jobs.store import Job, JobStore
from assistant.tuning.adapters import AdapterStore
from assistant.tuning.data import examples_jsonl
from assistant.tuning.train import TuneConfig
from knowledge.chunk import ChunkConfig
from knowledge.errors import ConfigError, TsumugiError
from knowledge.files import atomic_write_bytes
from knowledge.ingest import FileResult, Source, collect_sources, ingest_files
from knowledge.library import Library
from knowledge.limits import check_count
from knowledge.progress import Progress
from knowledge.retrieve import Hit, RetrievalConfig, retrieve
from knowledge.store import KnowledgeBase

MODEL_CHOICES = "models.json"
"""The chat and embedding models an admin chose in the Models tab, under the data directory."""


class Tsumugi:
    def __init__(self, settings: Settings | None = None, model_choices: bool = True) -> None:
        """``model_choices``: apply the models an admin chose in the Models tab (a job's worker
        does not: it runs on the models recorded with the job)."""
        self.settings = settings or Settings.from_env()
        prepare_environment(self.settings)
        events.configure(self.settings.data_dir)
        self.library = Library(self.settings.data_dir)
        self.adapters = AdapterStore(self.settings.data_dir)
        self.jobs = JobStore(self.settings.data_dir)
        self.evals = EvalRunStore(self.settings.data_dir)
        self.drafts = DraftStore(self.settings.data_dir)
        # Folders left by runs that were killed mid-way are never listed; clear them out.
        self.adapters.discard_staging(keep=self.jobs.active_ids())
        if model_choices:
            self._load_model_choices()
        self._access = None

    @property
    def access(self):
        """Who may do what on this server (assistant.serving.access); the mode is fixed at
        the first use, as the login page is."""
        if self._access is None:
            from assistant.serving.access import Access
            from assistant.serving.users import UserStore

            self._access = Access(
                UserStore(self.settings.data_dir), self.settings.allow_open, self.settings.open_limits
            )
        return self._access

    def knowledge_base(self, name: str, create: bool = False, chunk_size: int | None = None) -> KnowledgeBase:
        """An existing base, or a new one (``chunk_size`` tokens per passage; overlap a fifth)."""
        if create and not self.library.exists(name):
            chunking = ChunkConfig(size=chunk_size, overlap=chunk_size // 5) if chunk_size else None
            return self.library.create(name, embed_model=self.settings.embed_model, chunking=chunking)
        return self.library.get(name)

    def chat_model(self, config: ModelConfig | None = None) -> ChatBackend:
        """The model that answers: the remote chat model when one is configured (an adapter
        still answers here, on its base model), the local model of ``config`` otherwise."""
        config = config or self.settings.model
        if self.settings.chat is not None and not config.adapter:
            return remote_model(self.settings.chat)
        return load_chat_model(config, Path(self.settings.model_cache))

    def model_config(self, adapter: str | None = None, precision: str | None = None) -> ModelConfig:
        """The configured chat model, or an adapter on the base model it was trained from."""
        config = self.settings.model
        if adapter:
            info = self.adapters.get(adapter)
            config = replace(config, name=info.base_model, adapter=str(info.path))
        if precision:
            config = replace(config, precision=precision)
        return config

    # -- models ----------------------------------------------------------------------
    def model_folders(self) -> list[Path]:
        """Where the Models tab looks for model folders: the models directory and the
        merged adapter exports."""
        data = Path(self.settings.data_dir)
        return [Path(self.settings.models_dir or data / "model-folders"), data / "exports"]

    def models(self) -> list[ModelEntry]:
        return list_models(self.model_folders())

    def _entry(self, name: str, kind: str) -> ModelEntry:
        name = (name or "").strip()
        if not name:
            raise ConfigError(f"Choose the {kind} model first.")
        entry = describe(name, self.model_folders())
        if entry is None:
            check_model_available(name)  # says where it looked
            raise ModelError(
                f"{name} is not a model Tsumugi can use here; choose one from the list of models."
            )
        if entry.kind != kind:
            raise ConfigError(f"{name} is an {entry.kind} model, not a {kind} model.")
        return entry

    def set_chat_model(self, name: str) -> ModelEntry:
        """Answer with ``name`` from now on (and after a restart), once it is known to fit."""
        entry = self._entry(name, "chat")
        config = replace(self.settings.model, name=entry.name, adapter="")
        check_fits(entry, config.resolved_precision(), config.resolved_device(), self.settings.free_memory_mb)
        self.settings = replace(self.settings, model=config)
        self._save_model_choice("chat", entry.name)
        forget_models()  # the previous model leaves memory once its last answer is done
        return entry

    def set_embed_model(self, name: str) -> ModelEntry:
        """Embed new knowledge bases with ``name`` (existing ones keep theirs)."""
        entry = self._entry(name, "embedding")
        check_fits(entry, "fp32", "cpu", self.settings.free_memory_mb)
        self.settings = replace(self.settings, embed_model=entry.name)
        self._save_model_choice("embedding", entry.name)
        return entry

    def _save_model_choice(self, kind: str, name: str) -> None:
        """Record one choice, keeping the other (and the configured default where none was made)."""
        path = Path(self.settings.data_dir) / MODEL_CHOICES
        with filelock.FileLock(str(path) + ".lock"):
            try:
                choices = json.loads(path.read_text(encoding="utf-8"))
                choices = choices if isinstance(choices, dict) else {}
            except (OSError, ValueError):
                choices = {}
            atomic_write_bytes(path, json.dumps({**choices, kind: name}).encode())

    def _load_model_choices(self) -> None:
        path = Path(self.settings.data_dir) / MODEL_CHOICES
        if not path.exists():
            return
        try:
            choices = json.loads(path.read_text(encoding="utf-8"))
            model = replace(self.settings.model, name=str(choices.get("chat", self.settings.model.name)))
            embed = str(choices.get("embedding", self.settings.embed_model))
        except (OSError, ValueError, AttributeError, TsumugiError):
            print(
                f"warning: {path} is damaged; using the configured models (choose them again in the Models tab)."
            )
            return
        self.settings = replace(self.settings, model=model, embed_model=embed)

    def pull_model(self, repo_id: str, cancel: threading.Event) -> Generator[Progress, None, str]:
        """Download a hub model into the local cache (when downloads are allowed)."""
        return pull(repo_id.strip(), self.settings.allow_downloads, cancel)

    # -- tuning ----------------------------------------------------------------------
    def start_tune(
        self,
        name: str,
        data: dict,
        config: TuneConfig,
        base: str | None = None,
        data_bytes: bytes | None = None,
    ) -> Job:
        """Check the request, then start training in a worker process; returns the queued job.

        ``data`` is ``{"kind": "file", "path": ..., "question_column": ..., "answer_column": ...}``,
        ``{"kind": "kb", "kb": name}`` (continued pre-training on its passages) or
        ``{"kind": "drafts", "kb": name or None}`` (accepted reply drafts).
        """
        from assistant.tuning.job import DATA_FILE, prepare_tune

        request = {
            "name": name.strip(),
            "base": base or self.settings.model.name,
            "data": data,
            "config": config.to_json(),
            "model_cache": str(Path(self.settings.model_cache).resolve()),
        }
        checked, _ = prepare_tune(
            request, self.settings.data_dir, self.settings.limits, self.settings.allow_downloads
        )
        files = {}
        if data.get("kind") == "file":
            files[DATA_FILE] = data_bytes if data_bytes is not None else Path(data["path"]).read_bytes()
        elif data.get("kind") in ("drafts", "dataset"):
            # The job trains on the drafts or dataset as read now, whatever changes later.
            files[DATA_FILE] = examples_jsonl(checked.examples)
        job = self.jobs.submit("tune", request, files)
        events.log("job", id=job.id, job="tune", state="submitted", name=request["name"])
        return job

    def delete_adapter(self, name: str) -> None:
        info = self.adapters.get(name)
        self.adapters.delete(name)
        forget_models(info.path)  # after: a load racing the delete finds no folder to load

    def rename_adapter(self, old: str, new: str) -> str:
        """Rename an adapter; returns its new name as stored (trimmed and checked)."""
        info = self.adapters.get(old)
        renamed = self.adapters.rename(old, new)
        forget_models(info.path)  # the adapter answers under its new folder once asked again
        return renamed.name

    def export_adapter(self, name: str, out: str | Path, merge: bool = False, serve_with: str = "") -> Path:
        """The adapter as a zip, merged into a standalone model, or (``serve_with`` vllm or
        ollama) as the folder that inference server loads."""
        if serve_with:
            from assistant.tuning.deploy import export_for

            return export_for(self.adapters, name, out, self.settings.model_cache, serve_with)
        if merge:
            return self.adapters.merge(name, out, self.settings.model_cache)
        return self.adapters.zip(name, out)

    def deploy_adapter(
        self, name: str, url: str, key: str, out: str | Path | None = None, server_path: str | None = None
    ) -> str:
        """Export the adapter for vLLM into ``out`` (default: under the data directory) and load
        it into the running server at ``url`` (vLLM, or another Tsumugi), which sees ``out`` as
        ``server_path`` when given; returns the server's reply."""
        import time

        from assistant.tuning.deploy import deploy

        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = out or Path(self.settings.data_dir).resolve() / "exports" / f"deploy-{stamp}"
        folder = self.export_adapter(name, out, serve_with="vllm")
        return deploy(folder, name, url, key, server_path and f"{server_path.rstrip('/')}/{name}")

    def ingest(
        self,
        kb_name: str,
        paths: list[str | Path] | list[Source],
        cancel: threading.Event | None = None,
        chunk_size: int | None = None,
    ) -> Generator[Progress, None, list[FileResult]]:
        """Add files and folders (or ready-made sources) to a knowledge base, created if missing
        (with ``chunk_size`` tokens per passage when given)."""
        if all(isinstance(p, Source) for p in paths):
            sources = list(paths)
        else:
            sources = collect_sources(paths)  # type: ignore[arg-type]
        check_count(len(sources), self.settings.limits)  # a refused batch creates nothing
        kb = self.knowledge_base(kb_name, create=True, chunk_size=chunk_size)
        results = yield from ingest_files(kb, sources, cancel, limits=self.settings.limits)
        for r in results:
            events.log("ingest", kb=kb_name, file=r.name, status=r.status, chunks=r.chunks, message=r.message)
        return results

    def _reranked(self, config: RetrievalConfig | None) -> RetrievalConfig:
        """``config`` with the deployment's reranking model (TSUMUGI_RERANK_MODEL), unless it
        names its own."""
        config = config or RetrievalConfig()
        if config.rerank_model or not self.settings.rerank_model:
            return config
        return replace(config, rerank_model=self.settings.rerank_model)

    def search(self, kb_name: str, query: str, config: RetrievalConfig | None = None) -> list[Hit]:
        return retrieve(self.library.get(kb_name), query, self._reranked(config))

    def ask(
        self,
        kb_name: str,
        question: str,
        history: list[tuple[str, str]] | None = None,
        config: AnswerConfig | None = None,
        model: ModelConfig | None = None,
        stop: threading.Event | None = None,
        source: str | None = "chat",
    ) -> Generator[Answer, None, Answer]:
        """Answer with citations and a confidence; low confidence goes to the larger model when
        one is configured (see :mod:`assistant.answering.escalate`). The outcome is recorded for the
        escalation statistics under ``source`` (chat, api; None records nothing)."""
        kb = self.library.get(kb_name)
        config = config or AnswerConfig()
        config = replace(config, retrieval=self._reranked(config.retrieval))
        answer = None
        for answer in answer_question(
            kb, self.chat_model(model), question, history, config, stop, self.settings.escalation
        ):
            yield answer
        if answer is not None and answer.done and source:
            self.drafts.record_answer(kb_name, source, answer)
            _log_answer(source, kb_name, answer)
        return answer

    def draft(
        self,
        kb_name: str,
        message: str,
        config: DraftConfig | None = None,
        model: ModelConfig | None = None,
        stop: threading.Event | None = None,
        author: str = "",
    ) -> Generator[Answer, None, Answer]:
        """Draft a reply to a customer's message; the finished draft is stored as pending,
        with its ``author`` (the agent who asked; empty in local mode and for visitors)."""
        kb = self.library.get(kb_name)
        config = config or DraftConfig()
        if not config.rerank_model and self.settings.rerank_model:
            config = replace(config, rerank_model=self.settings.rerank_model)
        answer = None
        for answer in draft_reply(
            kb, self.chat_model(model), message, config, self.settings.escalation, stop
        ):
            if answer.done:
                answer.draft_id = self.drafts.add(kb_name, answer, tone=config.tone, author=author)
                _log_answer("draft", kb_name, answer)
            yield answer
        return answer

    # -- evaluation ------------------------------------------------------------------
    def eval_sets(self, kb_name: str) -> EvalSetStore:
        return EvalSetStore(self.library.get(kb_name).folder)

    def evaluate(
        self, evalset: EvalSet, config: EvalConfig, cancel: threading.Event | None = None
    ) -> Generator[Progress, None, EvalRun]:
        """Run ``evalset`` with ``config`` here (CLI, tests) and store the run."""
        run = yield from run_evaluation(self, evalset, config, cancel)
        self.evals.save(run)
        return run

    def start_eval(self, kb_name: str, set_name: str, configs: list[EvalConfig], limit: int = 0) -> Job:
        """Run a stored set with one or more configurations as a background job.

        ``limit`` keeps only the first questions (0: all)."""
        from dataclasses import asdict

        evalset = self.eval_sets(kb_name).get(set_name)
        if limit:
            evalset = EvalSet(evalset.name, evalset.items[:limit])
        for config in configs:
            if config.adapter:
                self.adapters.get(config.adapter)
            if config.kb:
                self.library.get(config.kb)
        request = {
            "name": f"{set_name} × {len(configs)}",
            "set": evalset.to_json(),
            "configs": [asdict(c) for c in configs],
            "settings": self._worker_settings(),
        }
        job = self.jobs.submit("eval", request)
        events.log("job", id=job.id, job="eval", state="submitted", name=request["name"])
        return job

    def _worker_settings(self) -> dict:
        s = self.settings
        return {
            "data_dir": str(Path(s.data_dir).resolve()),
            "model_cache": str(Path(s.model_cache).resolve()),
            "model": {"name": s.model.name, "precision": s.model.precision, "device": s.model.device},
            "embed_model": s.embed_model,
            "escalation": {
                "base_url": s.escalation.base_url,
                "model": s.escalation.model,
                "threshold": s.escalation.threshold,
            },
            # The key stays out of the job's files: the worker reads it from its environment.
            "chat": {"base_url": s.chat.base_url, "model": s.chat.model} if s.chat else None,
        }


def _log_answer(source: str, kb: str, answer: Answer) -> None:
    events.log(
        "answer",
        source=source,
        kb=kb,
        model=answer.model,
        covered=answer.covered,
        confidence=None if answer.confidence is None else round(answer.confidence, 3),
        escalated=answer.escalated,
        needs_review=answer.needs_review,
        sub_questions=len(answer.sub_questions),
        seconds=round(answer.timings.get("total_s", 0.0), 2),
    )
