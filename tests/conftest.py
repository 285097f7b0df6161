"""Shared fixtures: real embedded models, real FAISS and SQLite, in temporary folders."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from assistant.config import Settings, prepare_environment
from knowledge.progress import drive_events

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures" / "documents"
CONTOSO = SHARED / "data" / "contoso-manuals"
DATA = Path(__file__).parent / "data"

prepare_environment(Settings())
os.environ["HF_HUB_OFFLINE"] = "1"


MODEL_FIXTURES = {"chat_model", "service"}
"""Fixtures that load the chat model: a test using one (directly or through another fixture)
is slow, and ``make test-fast`` skips it as the README says."""


def pytest_collection_modifyitems(config, items):
    import torch

    for item in items:
        if MODEL_FIXTURES & set(item.fixturenames) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("gpu") and not torch.cuda.is_available():
            item.add_marker(
                pytest.mark.skip(reason="needs a CUDA GPU: run `make gpu-check` on a machine with one")
            )


def drain(gen):
    """Run a progress generator to its end and return (events, result)."""
    events: list = []
    result = drive_events(gen, events.append)
    return events, result


def stop_jobs(data_dir: Path) -> None:
    """Cancel every job still running under ``data_dir``: workers outlive their app by design,
    and a test that failed half-way must not leave one training in the background."""
    from assistant.jobs.store import JobStore

    jobs = JobStore(data_dir)
    for job in jobs.list():
        if job.active:
            jobs.cancel(job.id)
            jobs.wait(job.id, timeout=60)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert FIXTURES.is_dir() and CONTOSO.is_dir(), f"test data is missing under {SHARED}"
    return SHARED


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One converted copy of the embedded chat model for the whole session."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def embedder():
    from knowledge.embed import get_embedder

    return get_embedder()


@pytest.fixture
def library(tmp_path):
    from knowledge.library import Library

    return Library(tmp_path / "data")


@pytest.fixture(scope="session")
def contoso_kb(tmp_path_factory, shared_data, embedder):
    from knowledge.ingest import collect_sources, ingest_files
    from knowledge.library import Library

    kb = Library(tmp_path_factory.mktemp("contoso")).create("contoso")
    _, results = drain(ingest_files(kb, collect_sources([CONTOSO])))
    assert all(r.status == "added" for r in results), results
    return kb


@pytest.fixture(scope="session")
def support_sets(tmp_path_factory, embedder):
    """The English IT-support and Japanese shop sets, each ingested, with their questions."""
    from knowledge.ingest import collect_sources, ingest_files
    from knowledge.library import Library

    library = Library(tmp_path_factory.mktemp("sets"))
    sets = {}
    for name in ("en-support", "ja-support"):
        kb = library.create(name)
        drain(ingest_files(kb, collect_sources([DATA / name])))
        sets[name] = (kb, json.loads((DATA / name / "questions.json").read_text("utf-8")))
    return sets


@pytest.fixture(scope="session")
def chat_model(model_cache):
    from assistant.generation.cache import load_chat_model
    from assistant.generation.config import ModelConfig

    return load_chat_model(ModelConfig(device="cpu"), model_cache)


def tiny_bert_config(**extra):
    """A two-layer BERT of width 32 on all-MiniLM's vocabulary: random, small, quick to save."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        **extra,
    )


@pytest.fixture(scope="session")
def tiny_embedder_dir(tmp_path_factory) -> Path:
    """A small random sentence-transformers model saved in a local folder (another model)."""
    import shutil

    from sentence_transformers import SentenceTransformer, models
    from transformers import BertModel

    from knowledge.embed import embedded_model_path

    folder = tmp_path_factory.mktemp("tiny-embedder")
    bert_dir = folder / "bert"
    BertModel(tiny_bert_config(max_position_embeddings=512)).save_pretrained(bert_dir)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(embedded_model_path() / name, bert_dir / name)
    word = models.Transformer(str(bert_dir), max_seq_length=128)
    pooling = models.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    out = folder / "model"
    SentenceTransformer(modules=[word, pooling], device="cpu").save(str(out))
    return out


def second_tsumugi(data_dir: Path, model_cache: Path, key: str):
    """Another Tsumugi's API on loopback, with the admin key ``key``: the larger model, a remote
    chat model or a vLLM server stands in as it. Returns (app, base URL, server)."""
    from assistant.serving.api import create_api
    from assistant.serving.service import Tsumugi

    other = Tsumugi(Settings(data_dir=data_dir, model_cache=model_cache, api_keys=(key,)))
    url, server = serve_in_thread(create_api(other))
    return other, url, server


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _AllAtOnce(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat server that answers only once ``parties`` requests are open at
    the same time (503 if they never are, within 20 s)."""

    barrier: threading.Barrier
    statuses: list[int]
    """What each request was answered: 200, or 503 when the barrier broke."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        try:
            self.barrier.wait()
        except threading.BrokenBarrierError:
            self.statuses.append(503)
            self.send_error(503, "fewer requests came at once than the server waited for")
            return
        self.statuses.append(200)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for delta, finish in (({"role": "assistant", "content": "ok"}, None), ({}, "stop")):
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args) -> None:
        pass


def all_at_once_server(parties: int):
    """Start :class:`_AllAtOnce` on loopback: the chat model of a server that has room for
    ``parties`` requests, which only a caller running that many at once gets answers from.
    Returns (base URL, server); ``server.RequestHandlerClass.statuses`` lists the answers."""
    barrier = threading.Barrier(parties, timeout=20)
    handler = type("Handler", (_AllAtOnce,), {"barrier": barrier, "statuses": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/v1", server


def serve_in_thread(app, host: str = "127.0.0.1"):
    """Run an ASGI app with uvicorn on a free loopback port; returns (base URL, server)."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    return f"http://{host}:{port}", server


@pytest.fixture(scope="session")
def service(tmp_path_factory, model_cache, embedder):
    """A Tsumugi service with the contoso manuals and the Japanese support pages ingested."""
    from assistant.serving.service import Tsumugi

    app = Tsumugi(
        Settings(
            data_dir=tmp_path_factory.mktemp("service-data"), model_cache=model_cache, api_keys=("test-key",)
        )
    )
    for name, folder in (("contoso", CONTOSO), ("ja-support", DATA / "ja-support")):
        results = drive_events(app.ingest(name, [folder]))
        assert results and all(r.status == "added" for r in results), [(r.name, r.message) for r in results]
    yield app
    stop_jobs(app.settings.data_dir)


def untrained_adapter(app, name: str) -> str:
    """A real peft LoRA adapter on the embedded model, stored in ``app``'s adapter store without
    training (LoRA's B matrices start at zero, so it answers as the base model does)."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from assistant.generation.config import resolve_model_source

    source = resolve_model_source(app.settings.model.name, app.settings.model_cache)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    staging = app.adapters.staging(f"test-{name}")
    peft_model.save_pretrained(staging)
    card = {"base_model": app.settings.model.name, "created": "test", "metrics": {}}
    (staging / "comparison.json").write_text(json.dumps([]), encoding="utf-8")
    return app.adapters.commit(staging, name, card).name
