"""The model catalogue: what is listed, what each model needs, refusing one that does not fit,
choices that survive a restart, and downloading from a hub (a real server on loopback speaking
the hub's protocol) with progress and a cancel that really stops."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from assistant.config import Settings
from assistant.generation.backend import ModelError
from knowledge.errors import ConfigError
from tests.conftest import ROOT
from tests.hub_server import COMMIT, serve_hub


def _tiny_chat_model(folder):
    """A random two-layer Llama saved as a model folder; returns its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.state_dict().values())


@pytest.fixture
def app(tmp_path, model_cache):
    from assistant.serving.service import Tsumugi

    return Tsumugi(Settings(data_dir=tmp_path / "data", model_cache=model_cache))


def test_catalogue_lists_embedded_models_and_folders_with_their_memory(app, tiny_embedder_dir):
    folders = app.model_folders()[0]
    parameters = _tiny_chat_model(folders / "tiny-llama")
    shutil.copytree(tiny_embedder_dir, folders / "tiny-embedder")
    (folders / "not-a-model").mkdir()
    by_name = {e.name: e for e in app.models()}
    assert by_name["smollm2-135m-instruct"].source == "embedded"
    assert 130e6 < by_name["smollm2-135m-instruct"].parameters < 140e6  # SmolLM2-135M
    assert by_name["all-MiniLM-L6-v2"].kind == "embedding"
    tiny = by_name[str(folders / "tiny-llama")]
    assert (tiny.kind, tiny.source, tiny.parameters) == ("chat", "folder", parameters)
    assert tiny.precisions == ("fp32", "bf16", "8bit", "4bit")
    smol = by_name["smollm2-135m-instruct"].memory_mb  # 135 M parameters: 4, 2, 1 and ~0.5 bytes each
    assert smol["fp32"] > smol["bf16"] > smol["8bit"] > smol["4bit"] > 300
    assert 800 < smol["fp32"] < 1000 and 550 < smol["bf16"] < 650
    assert by_name[str(folders / "tiny-embedder")].kind == "embedding"
    assert not any("not-a-model" in name for name in by_name)


def test_a_model_that_does_not_fit_is_refused_before_it_loads(app, tmp_path):
    from dataclasses import replace

    from assistant.generation.cache import loaded_models

    folder = app.model_folders()[0] / "tiny-llama"
    _tiny_chat_model(folder)
    before = [m.label for m in loaded_models()]
    app.settings = replace(app.settings, free_memory_mb=100)
    with pytest.raises(
        ModelError, match=r"tiny-llama needs about 0\.\d GB in \w+ and only 0\.1 GB of memory is free"
    ):
        app.set_chat_model(str(folder))
    assert app.settings.model.name == "smollm2-135m-instruct", "the choice is unchanged"
    assert [m.label for m in loaded_models()] == before, "nothing was loaded"
    with pytest.raises(ConfigError, match="is an embedding model, not a chat model"):
        app.set_chat_model("all-MiniLM-L6-v2")
    with pytest.raises(ModelError, match="neither a local folder nor in the local model cache"):
        app.set_chat_model("acme/not-here")


def test_choices_hold_without_a_restart_and_after_one(app, tiny_embedder_dir):
    from assistant.serving.service import Tsumugi

    folder = app.model_folders()[0] / "tiny-llama"
    _tiny_chat_model(folder)
    app.set_chat_model(str(folder))
    app.set_embed_model(str(tiny_embedder_dir))
    assert app.settings.model.name == str(folder)
    assert app.knowledge_base("new", create=True).embed_model == str(tiny_embedder_dir)
    again = Tsumugi(Settings(data_dir=app.settings.data_dir, model_cache=app.settings.model_cache))
    assert (again.settings.model.name, again.settings.embed_model) == (str(folder), str(tiny_embedder_dir))
    # A job's worker runs on the models recorded with the job, not on a later choice.
    worker = Tsumugi(
        Settings(data_dir=app.settings.data_dir, model_cache=app.settings.model_cache), model_choices=False
    )
    assert worker.settings.model.name == "smollm2-135m-instruct"


def test_one_choice_does_not_pin_the_other(app, monkeypatch, tiny_embedder_dir):
    from assistant.serving.service import Tsumugi

    app.set_embed_model(str(tiny_embedder_dir))
    configured = Settings(
        data_dir=app.settings.data_dir, model_cache=app.settings.model_cache, embed_model="all-MiniLM-L6-v2"
    )
    from dataclasses import replace

    later = Tsumugi(replace(configured, model=replace(configured.model, name="/models/configured-later")))
    assert later.settings.model.name == "/models/configured-later", (
        "no chat choice was made: the setting holds"
    )
    assert later.settings.embed_model == str(tiny_embedder_dir)


def _cli(args, env, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "assistant", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env, **kwargs,
    )  # fmt: skip


def test_pull_downloads_with_progress_lists_the_model_and_cancel_stops_it(tmp_path):
    folder = tmp_path / "tiny"
    _tiny_chat_model(folder)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    url, server = serve_hub(files, "acme/tiny-llama", delay_s=0.01)
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    env = {**base, "TSUMUGI_DATA": str(tmp_path / "data"), "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": url, "PYTHONPATH": str(ROOT)}  # fmt: skip
    try:
        refused = _cli(["models", "--pull", "acme/tiny-llama"], env)
        _, err = refused.communicate(timeout=120)
        assert refused.returncode == 2 and "Downloads are off: set TSUMUGI_ALLOW_DOWNLOADS=1" in err
        env["TSUMUGI_ALLOW_DOWNLOADS"] = "1"
        pulled = _cli(["models", "--pull", "acme/tiny-llama"], env)
        out, err = pulled.communicate(timeout=120)
        assert pulled.returncode == 0, err
        assert "downloading" in err and "MB" in err
        snapshot = tmp_path / "hf" / "hub" / "models--acme--tiny-llama" / "snapshots" / COMMIT
        assert f"({snapshot})" in out
        assert (snapshot / "model.safetensors").read_bytes() == files["model.safetensors"]
        listed = _cli(["models", "--json"], env)
        out, err = listed.communicate(timeout=120)
        entry = next(e for e in json.loads(out) if e["name"] == "acme/tiny-llama")
        assert (entry["kind"], entry["source"]) == ("chat", "hub cache")
    finally:
        server.shutdown()

    # A slow download (40 MB; progress comes per 10 MB chunk), cancelled with Ctrl-C after the
    # first chunk: it stops within a chunk, and the file is not in place.
    url, server = serve_hub({"config.json": files["config.json"], "model.safetensors": os.urandom(40 << 20)}, "acme/big", delay_s=0.02)  # fmt: skip
    env["HF_ENDPOINT"] = url
    try:
        pulling = _cli(["models", "--pull", "acme/big"], env)
        deadline = time.monotonic() + 60
        seen = ""
        while not re.search(r"downloading: [1-9][\d.]*/40 MB", seen) and time.monotonic() < deadline:
            seen += pulling.stderr.read(1)  # the progress line: some MB of 40 arrived
        pulling.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        pulling.communicate(timeout=30)
        assert pulling.returncode == 130 and time.monotonic() - stopped < 10
        assert not (
            tmp_path / "hf" / "hub" / "models--acme--big" / "snapshots" / COMMIT / "model.safetensors"
        ).exists()
    finally:
        server.shutdown()


def test_cancel_stops_the_download_thread_within_a_chunk(tmp_path, monkeypatch):
    import threading

    from huggingface_hub import constants

    from assistant.generation.catalog import pull
    from knowledge.errors import Cancelled

    url, server = serve_hub({"model.safetensors": os.urandom(40 << 20)}, "acme/big", delay_s=0.02)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cancel = threading.Event()
    seen = []
    try:
        with pytest.raises(Cancelled, match="cancelled; the files fetched so far stay in the cache"):
            for event in pull("acme/big", True, cancel):
                seen.append(event.done)
                if event.done > 0:
                    cancel.set()
        assert seen[0] == 0 and 0 < seen[-1] < 40
        for thread in [t for t in threading.enumerate() if t.name == "pull-acme/big"]:
            thread.join(timeout=5)
            assert not thread.is_alive(), "the download stopped"
        assert not list((tmp_path / "hub").rglob("snapshots/*/model.safetensors"))
    finally:
        server.shutdown()


def test_a_damaged_choices_file_falls_back_to_the_configured_models(app, capsys):
    from assistant.serving.service import MODEL_CHOICES, Tsumugi

    (app.settings.data_dir / MODEL_CHOICES).write_text('{"chat": ', encoding="utf-8")
    again = Tsumugi(Settings(data_dir=app.settings.data_dir, model_cache=app.settings.model_cache))
    assert again.settings.model.name == "smollm2-135m-instruct"
    assert "models.json is damaged" in capsys.readouterr().out


def test_folders_without_loadable_weights_are_not_listed(app):
    folders = app.model_folders()[0]
    _tiny_chat_model(folders / "complete")
    (folders / "cancelled").mkdir()  # a pull cancelled before the weights came
    (folders / "cancelled" / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (folders / "lfs-pointer").mkdir()
    (folders / "lfs-pointer" / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (folders / "lfs-pointer" / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\n")
    names = {e.name for e in app.models()}
    assert str(folders / "complete") in names
    assert not {str(folders / "cancelled"), str(folders / "lfs-pointer")} & names


def test_models_tab_downloads_a_hub_model_and_lists_it(app, tmp_path, monkeypatch):
    """The Models tab's Download through gradio_client, against the loopback hub."""
    from dataclasses import replace

    from gradio_client import Client
    from huggingface_hub import constants

    from assistant.ui import build_app
    from tests.conftest import free_port

    folder = tmp_path / "tiny"
    _tiny_chat_model(folder)
    url, hub = serve_hub({p.name: p.read_bytes() for p in folder.iterdir()}, "acme/tiny-llama")
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    demo = build_app(app).queue()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        with pytest.raises(Exception, match="Downloads are off: set TSUMUGI_ALLOW_DOWNLOADS=1"):
            client.predict("acme/tiny-llama", api_name="/pull_model")
        app.settings = replace(app.settings, allow_downloads=True)
        done, summary, table, chat, _ = client.predict("acme/tiny-llama", api_name="/pull_model")
        assert done.startswith("Downloaded `acme/tiny-llama` into") and "downloads allowed" in summary
        rows = {row[2]: row for row in table.get("value", table)["data"]}
        assert rows["acme/tiny-llama"][1:4] == ["chat", "acme/tiny-llama", "hub cache"]
    finally:
        demo.close()
        hub.shutdown()
