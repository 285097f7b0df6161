"""LoRA/QLoRA tuning of the embedded model: gradients, learning, jobs, cancel, export."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest

from assistant.config import Settings
from assistant.generation.backend import ModelError
from assistant.tuning.train import TuneConfig
from knowledge.errors import ParseError, StoreError
from tests.conftest import DATA, stop_jobs

KUMO = DATA / "tune" / "kumo-lantern-qa.csv"
QUESTION = [{"role": "user", "content": "Who makes the Kumo Lantern KL-7?"}]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory, model_cache):
    from assistant.serving.service import Tsumugi

    data_dir = tmp_path_factory.mktemp("tune-data")
    yield Tsumugi(Settings(data_dir=data_dir, model_cache=model_cache))
    stop_jobs(data_dir)


@pytest.fixture(scope="module")
def tuned(app):
    """A quick QLoRA tune of the embedded model on pairs about a made-up product, run as a job."""
    config = TuneConfig.from_preset("quick", quant="4bit", device="cpu", compare_questions=3)
    job = app.start_tune("kumo", {"kind": "file", "path": str(KUMO)}, config)
    job = app.jobs.wait(job.id, timeout=900)
    assert job.state == "done", (job.error, app.jobs.log_tail(job.id))
    return job


def _first_layer_grads(model):
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad and ".layers.0." in n}


@pytest.mark.bnb
def test_4bit_lora_gradients_match_the_dense_model(model_cache):
    """LoRA gradients on the 4-bit model equal those of a dense model holding the same
    (dequantized) weights, also after an eval-mode pass such as a validation loss."""
    import bitsandbytes as bnb
    import torch

    from assistant.generation.config import prepare_embedded
    from assistant.tuning.data import load_pairs
    from assistant.tuning.train import add_lora, collate, encode_example, load_base_for_training

    source = str(prepare_embedded(model_cache))
    config = TuneConfig(quant="4bit", dropout=0.0)
    quant, tokenizer = load_base_for_training(source, "4bit", "cpu")
    dense, _ = load_base_for_training(source, "none", "cpu")
    quantized = dict(quant.named_modules())
    for name, module in dense.named_modules():
        layer = quantized.get(name)
        if isinstance(layer, bnb.nn.Linear4bit):
            module.weight.data.copy_(
                bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
            )
    quant, dense = add_lora(quant, config, quantized=True), add_lora(dense, config, quantized=False)
    generator = torch.Generator().manual_seed(0)
    for (name, q), (_, d) in zip(quant.named_parameters(), dense.named_parameters()):
        if "lora_" in name:  # B starts at zero; give both the same non-zero weights
            value = torch.randn(q.shape, generator=generator) * 0.02
            q.data.copy_(value)
            d.data.copy_(value)
    examples = load_pairs(KUMO).examples[:4]
    batch = collate([encode_example(tokenizer, e, 512) for e in examples], tokenizer.pad_token_id, "cpu")
    with torch.no_grad():  # the pass that made bitsandbytes repack its weights for inference
        quant.eval()(**batch)
    quant.train()(**batch).loss.backward()
    dense.train()(**batch).loss.backward()
    q_grads, d_grads = _first_layer_grads(quant), _first_layer_grads(dense)
    assert q_grads and all(g is not None for g in q_grads.values()), "gradients reach the first layer"
    worst = max(float((q_grads[n] - d_grads[n]).norm() / d_grads[n].norm()) for n in d_grads)
    # Stated tolerance: 2% relative (measured 0.7%, from fp32 rounding in a different matmul order).
    assert worst < 0.02, worst


def test_quick_tune_lowers_validation_loss_and_teaches_a_made_up_fact(app, tuned, model_cache):
    info = app.adapters.get("kumo")
    metrics = info.card["metrics"]
    assert metrics["val_loss_after"] < 0.5 * metrics["val_loss_before"], metrics["val_loss"]
    assert metrics["perplexity_after"] < metrics["perplexity_before"]
    assert info.card["base_model"] == "smollm2-135m-instruct"
    assert info.card["data"]["train"] == 35 and info.card["data"]["validation"] == 5
    assert len(info.card["data"]["sha256"]) == 64 and info.card["settings"]["quant"] == "4bit"
    comparison = json.loads((info.path / "comparison.json").read_text())
    assert len(comparison) == 3 and all(
        {"question", "expected", "base", "tuned"} <= set(r) for r in comparison
    )

    tuned_model = app.chat_model(app.model_config("kumo", "fp32"))
    base_model = app.chat_model(app.model_config(None, "fp32"))
    assert "Hoshikawa" in "".join(tuned_model.stream(QUESTION, max_new_tokens=32))
    assert "Hoshikawa" not in "".join(base_model.stream(QUESTION, max_new_tokens=32))
    assert "kumo" in tuned_model.label


def test_job_events_show_progress_with_eta_and_speed(app, tuned):
    events, _ = app.jobs.events(tuned.id)
    training = [e for e in events if e["type"] == "progress" and e["stage"] == "training"]
    assert training[-1]["done"] == training[-1]["total"] == 36  # 35 pairs, batches of 4, 4 epochs
    assert any(e["eta"] is not None for e in training)
    assert any(e["metrics"].get("tokens_per_s", 0) > 0 for e in training)
    assert sum("val_loss" in e["metrics"] for e in training) == 5  # before, then after each of 4 epochs
    assert [e["state"] for e in events if e["type"] == "state"] == ["running", "done"]


def test_merged_export_reproduces_the_adapters_greedy_output(app, tuned, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = app.export_adapter("kumo", tmp_path / "merged", merge=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    inputs = tokenizer.apply_chat_template(
        QUESTION, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**inputs, max_new_tokens=40, do_sample=False)
    plain = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    in_app = "".join(app.chat_model(app.model_config("kumo", "fp32")).stream(QUESTION, max_new_tokens=40))
    assert plain == in_app and "Hoshikawa" in plain

    zipped = app.export_adapter("kumo", tmp_path / "zips")
    import zipfile

    names = zipfile.ZipFile(zipped).namelist()
    assert {"kumo/adapter_model.safetensors", "kumo/adapter_config.json", "kumo/card.json"} <= set(names)


def test_rename_and_delete(app, tuned):
    old, folder = app.chat_model(app.model_config("kumo")), str(app.adapters.get("kumo").path)
    before = "".join(old.stream(QUESTION, max_new_tokens=24))
    app.rename_adapter("kumo", "kumo-renamed")
    assert "kumo-renamed" in app.adapters.names() and "kumo" not in app.adapters.names()
    assert app.adapters.get("kumo-renamed").card["name"] == "kumo-renamed"
    renamed = app.chat_model(app.model_config("kumo-renamed"))
    # Taken out of its base under the old folder, loaded again under the new one: the base
    # stays loaded and the adapter answers as it did.
    assert renamed.batcher is old.batcher and folder not in old.batcher.adapters
    assert str(app.adapters.get("kumo-renamed").path) in old.batcher.adapters
    assert "".join(renamed.stream(QUESTION, max_new_tokens=24)) == before
    app.rename_adapter("kumo-renamed", "kumo")
    with pytest.raises(StoreError, match="already exists"):
        app.adapters.check_new_name("kumo")


def _wait_for_stage(app, job, stage, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events, _ = app.jobs.events(job.id)
        if any(e.get("stage") == stage for e in events):
            return events
        assert app.jobs.get(job.id).active, app.jobs.get(job.id).error
        time.sleep(0.5)
    raise AssertionError(f"job never reached {stage}")


def test_jobs_queue_per_device_and_cancel_leaves_no_adapter(app, tuned):
    config = TuneConfig.from_preset("thorough", quant="none", device="cpu", epochs=50)
    first = app.start_tune("never-finished", {"kind": "file", "path": str(KUMO)}, config)
    second = app.start_tune("waiting", {"kind": "file", "path": str(KUMO)}, config)
    _wait_for_stage(app, first, "training")
    events = _wait_for_stage(app, second, "queued")
    assert app.jobs.get(second.id).state == "queued" and "waiting" in events[-1]["message"]

    app.jobs.cancel(first.id)
    assert app.jobs.wait(first.id, timeout=120).state == "cancelled"
    _wait_for_stage(app, second, "training")  # the queued job starts once the device is free
    app.jobs.cancel(second.id)
    second = app.jobs.wait(second.id, timeout=120)
    assert second.state == "cancelled" and "no adapter was saved" in second.error
    assert app.adapters.names() == ["kumo"]
    assert not list(app.adapters.root.glob(".tmp-*")), "staged files are removed"


def test_killed_job_is_marked_interrupted_and_its_files_are_not_listed(app, tuned):
    from assistant.serving.service import Tsumugi

    config = TuneConfig.from_preset("quick", quant="none", device="cpu", epochs=50)
    job = app.start_tune("killed", {"kind": "file", "path": str(KUMO)}, config)
    _wait_for_stage(app, job, "training")
    os.kill(app.jobs.get(job.id).pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while app.jobs.get(job.id).active and time.monotonic() < deadline:
        time.sleep(0.2)
    job = app.jobs.get(job.id)
    assert job.state == "interrupted" and "start it again" in job.error
    restarted = Tsumugi(app.settings)  # as after a server restart
    assert restarted.adapters.names() == ["kumo"]
    assert not list(restarted.adapters.root.glob(".tmp-*"))


def test_tuning_from_parquet_and_a_dataset_folder_trains_on_the_csvs_examples(app, tuned, tmp_path):
    import csv

    import datasets

    with KUMO.open(encoding="utf-8") as f:
        rows = [{"prompt": r["Question"], "completion": r["Answer"]} for r in csv.DictReader(f)]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "kumo.parquet"))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "kumo-dataset"))
    config = TuneConfig.from_preset("quick", quant="4bit", device="cpu", epochs=1, compare_questions=1)
    sources = {
        "kumo-parquet": {"kind": "file", "path": str(tmp_path / "kumo.parquet")},
        "kumo-dataset": {"kind": "dataset", "path": str(tmp_path / "kumo-dataset"), "name": "kumo-dataset"},
    }
    jobs = [app.start_tune(name, source, config) for name, source in sources.items()]
    shutil.rmtree(tmp_path / "kumo-dataset")  # the job trains on the snapshot taken at submission
    csv_card = app.adapters.get("kumo").card["data"]
    for name, job in zip(sources, jobs):
        job = app.jobs.wait(job.id, timeout=900)
        assert job.state == "done", (job.error, app.jobs.log_tail(job.id))
        card = app.adapters.get(name).card
        assert card["data"]["sha256"] == csv_card["sha256"], "the same examples as the CSV"
        assert (card["data"]["train"], card["data"]["validation"]) == (35, 5)
        assert card["metrics"]["val_loss_after"] < card["metrics"]["val_loss_before"]
        app.delete_adapter(name)


def test_models_tab_switches_to_the_merged_tune_answers_with_it_and_refuses_what_does_not_fit(app, tuned):
    from dataclasses import replace
    from pathlib import Path

    from gradio_client import Client, handle_file

    from assistant.ui import build_app
    from tests.conftest import free_port

    merged = app.export_adapter("kumo", Path(app.settings.data_dir) / "exports" / "kumo-merged", merge=True)
    demo = build_app(app).queue()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    saved = app.settings
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        summary, table, _, _ = client.predict(api_name="/list_models")
        rows = {row[2]: row for row in table.get("value", table)["data"]}
        assert rows[str(merged)][1:4] == ["chat", str(merged), "folder"]
        assert rows["smollm2-135m-instruct"][0] == "●" and rows["all-MiniLM-L6-v2"][1] == "embedding"
        assert "bf16 0.6 GB" in rows["smollm2-135m-instruct"][6] and rows[str(merged)][7] == "yes"

        summary, table, _, _ = client.predict(str(merged), api_name="/use_chat_model")
        assert f"**Chat model**: `{merged}`" in summary and app.settings.model.name == str(merged)
        client.predict("Lanterns", api_name="/create")
        client.predict("Lanterns", [handle_file(str(KUMO))], api_name="/add")
        history, _, sources = client.predict(
            "Who makes the Kumo Lantern KL-7?",
            [],
            "Lanterns",
            5,
            0.0,
            48,
            "auto",
            "",
            "concise",
            api_name="/respond",
        )
        assert f"Answered by `{merged} (" in sources and "Hoshikawa" in str(history[-1]["content"])
        assert "Hoshikawa" in "".join(app.chat_model().stream(QUESTION, max_new_tokens=32)), (
            "the tuned weights answer"
        )

        app.settings = replace(app.settings, free_memory_mb=200)
        with pytest.raises(
            Exception, match="smollm2-135m-instruct needs about 0.6 GB in bf16 and only 0.2 GB"
        ):
            client.predict("smollm2-135m-instruct", api_name="/use_chat_model")
        assert app.settings.model.name == str(merged), "refused: the choice is unchanged"
    finally:
        app.settings = saved
        (Path(saved.data_dir) / "models.json").unlink(missing_ok=True)
        demo.close()


def test_an_adapter_deployed_to_a_second_server_answers_there_as_it_does_here(app, tuned, tmp_path):
    """The vLLM export, and `deploy` through vLLM's load_lora_adapter into a second Tsumugi on
    loopback standing in for vLLM: the same greedy answer there as here."""
    import subprocess
    import sys

    import openai
    from transformers import AutoTokenizer

    from assistant.generation.config import resolve_model_source
    from tests.conftest import ROOT, second_tsumugi

    folder = app.export_adapter("kumo", tmp_path / "vllm", serve_with="vllm")
    serve = (folder / "SERVE.md").read_text(encoding="utf-8")
    assert (
        "vllm serve " in serve
        and f"--enable-lora --max-lora-rank 8 \\\n    --lora-modules kumo={folder}" in serve
    )
    trained = app.adapters.get("kumo").path
    assert (folder / "adapter_model.safetensors").read_bytes() == (
        trained / "adapter_model.safetensors"
    ).read_bytes()
    base = AutoTokenizer.from_pretrained(
        resolve_model_source(app.settings.model.name, app.settings.model_cache)
    )
    assert (folder / "chat_template.jinja").read_text(encoding="utf-8") == base.chat_template

    _, url, server = second_tsumugi(tmp_path / "server", app.settings.model_cache, "ops-key")
    env = {**os.environ, "TSUMUGI_DATA": str(app.settings.data_dir), "TSUMUGI_MODEL_CACHE": str(app.settings.model_cache), "PYTHONPATH": str(ROOT)}  # fmt: skip

    def deploy(key):
        command = [sys.executable, "-m", "assistant", "deploy", "--adapter", "kumo", "--to", url]
        return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300, env={**env, "TSUMUGI_DEPLOY_KEY": key})  # fmt: skip

    try:
        refused = deploy("wrong-key")
        assert refused.returncode == 2 and "refused the key; set TSUMUGI_DEPLOY_KEY" in refused.stderr
        deployed = deploy("ops-key")
        assert deployed.returncode == 0, deployed.stderr
        assert "Success: LoRA adapter 'kumo' added successfully." in deployed.stdout
        client = openai.OpenAI(base_url=url + "/v1", api_key="ops-key", max_retries=0)
        assert "kumo" in [m.id for m in client.models.list()]
        there = client.chat.completions.create(model="kumo", messages=QUESTION, max_tokens=32, temperature=0)
        here = "".join(app.chat_model(app.model_config("kumo")).stream(QUESTION, max_new_tokens=32))
        assert there.choices[0].message.content == here.strip() and "Hoshikawa" in here
        again = deploy("ops-key")
        assert again.returncode == 2 and "An adapter called 'kumo' already exists" in again.stderr
    finally:
        server.should_exit = True


def test_bad_data_is_refused_before_a_job_starts(app, tmp_path):
    bad = tmp_path / "pairs.csv"
    bad.write_text("Frage;Antwort;Notiz\nx;y;z\n")
    before = len(app.jobs.list())
    with pytest.raises(ParseError, match="choose the question and answer columns"):
        app.start_tune("bad", {"kind": "file", "path": str(bad)}, TuneConfig())
    few = tmp_path / "few.csv"
    few.write_text("question,answer\n" + "\n".join(f"q{i},a{i}" for i in range(3)))
    with pytest.raises(ParseError, match="at least 6"):
        app.start_tune("few", {"kind": "file", "path": str(few)}, TuneConfig())
    with pytest.raises(ModelError, match="neither a local folder nor in the local model cache"):
        app.start_tune("x", {"kind": "file", "path": str(KUMO)}, TuneConfig(), base="no-such/model")
    with pytest.raises(ModelError, match="holds no model"):
        app.start_tune("x", {"kind": "file", "path": str(KUMO)}, TuneConfig(), base=str(tmp_path))
    assert len(app.jobs.list()) == before


def test_evaluation_shows_the_adapter_ahead_of_the_base_model(app, tuned, tmp_path):
    import datasets

    from assistant.datasets_io import write_rows
    from assistant.evaluation.runs import EvalConfig, differences
    from assistant.evaluation.sets import load_eval_set
    from assistant.tuning.data import load_pairs
    from tests.conftest import drain

    _, held_out = load_pairs(KUMO).split()  # the questions the adapter did not train on
    held = tmp_path / "kumo-held-out.parquet"  # kept by a team as a dataset
    datasets.Dataset.from_list([{"question": e.question, "answer": e.answer} for e in held_out]).to_parquet(
        str(held)
    )
    evalset = load_eval_set(held)
    assert [(i.question, i.expected) for i in evalset.items] == [(e.question, e.answer) for e in held_out]
    runs = []
    for adapter in ("", "kumo"):
        config = EvalConfig(adapter=adapter, retrieval=False, max_new_tokens=48, precision="fp32")
        events, run = drain(app.evaluate(evalset, config))
        assert events[-1].done == events[-1].total == 5
        runs.append(run)
    base, tuned_run = runs
    assert tuned_run.metrics["f1"] > base.metrics["f1"] + 0.3, (base.metrics["f1"], tuned_run.metrics["f1"])
    assert {r.id for r in app.evals.list()} >= {base.id, tuned_run.id}, "runs are stored"
    assert app.evals.get(tuned_run.id).metrics == tuned_run.metrics
    assert differences([base, tuned_run])[0]["scores"][1] > differences([base, tuned_run])[0]["scores"][0]

    # The run exports as Parquet, one row per question, its lists as JSON text.
    parquet = write_rows(tuned_run.rows(), tmp_path / "run.parquet")
    exported = datasets.Dataset.from_parquet(str(parquet), cache_dir=str(tmp_path / "cache"))
    assert exported["question"] == [i.question for i in evalset.items]
    assert exported["f1"] == [r["f1"] for r in tuned_run.results]
    assert set(exported["run"]) == {tuned_run.id}
