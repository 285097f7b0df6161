"""Adapters where they are served.

``export_for`` writes the folder an inference server loads, with ``SERVE.md`` holding the exact
commands:

- vLLM (``--enable-lora --lora-modules NAME=PATH``): the peft adapter and the tokenizer with the
  chat template it was trained with;
- Ollama (``ollama create NAME -f Modelfile``): the adapter under ``adapter/`` and a Modelfile
  whose ``TEMPLATE`` is that chat template written as the Go template Ollama reads. A template
  that differs from training is the most common failure of such exports, so the Go template is
  built from what the chat template renders, and the export is refused when the two could
  disagree.

``deploy`` loads such a folder into a running server through the
runtime endpoint ``POST /v1/load_lora_adapter {"lora_name", "lora_path"}``, which vLLM and
Tsumugi's own API (``load_adapter``) both implement.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from assistant.tuning.adapters import AdapterInfo, AdapterStore
from assistant.tuning.ollama import chat_shape, check_ollama_base, modelfile
from knowledge.errors import ConfigError, StoreError

PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
CARD = "tsumugi-card.json"
"""The adapter's card in an exported folder: its base model, data and measurements."""


SERVERS = ("vllm", "ollama")


def export_for(
    store: AdapterStore, name: str, out_dir: str | Path, model_cache: str | Path, server: str
) -> Path:
    """``<out_dir>/<name>/``: the adapter as ``server`` (vllm or ollama) serves it, with SERVE.md."""
    from transformers import AutoTokenizer

    from assistant.generation.config import resolve_model_source

    if server not in SERVERS:
        raise ConfigError(f"Adapters export for {' or '.join(SERVERS)}, not {server!r}.")
    info = store.get(name)
    folder = Path(out_dir).resolve() / info.name
    if folder.exists() and any(folder.iterdir()):
        raise StoreError(f"{folder} already exists and is not empty; choose another --out folder.")
    base = resolve_model_source(info.base_model, Path(model_cache))
    tokenizer = AutoTokenizer.from_pretrained(base)
    shape = None
    if server == "ollama":
        check_ollama_base(base, info.base_model)
        shape = chat_shape(tokenizer, info.base_model)
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if shape is None:
            for file in PEFT_FILES:
                shutil.copy2(info.path / file, tmp / file)
        else:
            # `ollama create` collects a folder's weights as model*.safetensors (parser.go,
            # filesForModel) and converts every .safetensors beside adapter_config.json.
            (tmp / "adapter").mkdir()
            shutil.copy2(info.path / "adapter_config.json", tmp / "adapter" / "adapter_config.json")
            shutil.copy2(info.path / "adapter_model.safetensors", tmp / "adapter" / "model.safetensors")
        if (info.path / "confidence.json").is_file():
            shutil.copy2(info.path / "confidence.json", tmp / "confidence.json")
        shutil.copy2(info.path / "card.json", tmp / CARD)
        tokenizer.save_pretrained(tmp)  # writes chat_template.jinja
        if shape is not None:
            stops = sorted({t for t in (tokenizer.eos_token, shape.around["assistant"][1].strip()) if t})
            (tmp / "Modelfile").write_text(modelfile(base, shape, stops), encoding="utf-8")
            (tmp / "SERVE.md").write_text(_ollama_md(info, base, folder), encoding="utf-8")
        else:
            rank = json.loads((info.path / "adapter_config.json").read_text(encoding="utf-8")).get("r", 8)
            (tmp / "SERVE.md").write_text(_serve_md(info, base, folder, rank), encoding="utf-8")
        if folder.exists():
            folder.rmdir()
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for --max-lora-rank."""


def _serve_md(info: AdapterInfo, base: str, folder: Path, rank: int) -> str:
    name = info.name
    request = json.dumps(
        {"model": name, "messages": [{"role": "user", "content": "Hello"}], "temperature": 0}
    )
    load = json.dumps({"lora_name": name, "lora_path": str(folder)})
    return f"""# Serving the adapter `{name}` with vLLM

Trained by Tsumugi on `{info.base_model}`; its base model's weights are in `{base}`
(copy that folder to the GPU machine too if it is not there, and use its new path below).

```bash
vllm serve {base} --enable-lora --max-lora-rank {min(r for r in VLLM_LORA_RANKS if r >= rank)} \\
    --lora-modules {name}={folder} --chat-template {folder}/chat_template.jinja
```

Ask the adapter (the base model answers as `{base}`):

```bash
curl http://localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{request}'
```

Load it into a server that is already running (start vLLM with
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`):

```bash
curl -X POST http://localhost:8000/v1/load_lora_adapter -H 'Content-Type: application/json' \\
    -d '{load}'
# or, from Tsumugi: python -m assistant deploy --adapter {name} --to http://localhost:8000
```

`chat_template.jinja` is the chat template the adapter was trained with; answers follow it
only when the server uses the same one (hence `--chat-template`).
"""


def _ollama_md(info: AdapterInfo, base: str, folder: Path) -> str:
    name = info.name
    request = json.dumps({"model": name, "messages": [{"role": "user", "content": "Hello"}], "stream": False})
    return f"""# Serving the adapter `{name}` with Ollama

Trained by Tsumugi on `{info.base_model}`. The Modelfile builds the model from the base model's
weights in `{base}` (copy that folder to the Ollama machine too if it is not there, and change
the `FROM` line) with this adapter (`adapter/`) applied:

```bash
cd {folder}
ollama create {name} -f Modelfile
ollama run {name} "Hello"
```

Ask it over HTTP (Ollama's API, or its OpenAI-compatible `/v1/chat/completions`):

```bash
curl http://localhost:11434/api/chat -d '{request}'
```

The Modelfile's `TEMPLATE` is the chat template the adapter was trained with
(`chat_template.jinja`), written as the Go template Ollama reads; Tsumugi checked that both give
the same prompt before writing it. Use Tsumugi as the front end with
`TSUMUGI_CHAT_URL=http://localhost:11434/v1 TSUMUGI_CHAT_MODEL={name}`.
"""


def load_adapter(store: AdapterStore, name: str, path: str, base_model: str) -> AdapterInfo:
    """The server side of ``load_lora_adapter``: copy the adapter at ``path`` (on this machine)
    into the store as ``name``, once it is known to be a peft adapter of ``base_model``: plain
    files (no links), readable safetensors, and trained on this base (its card, or else the
    base named in its peft config). Nothing is stored unless all of it holds."""
    from safetensors import SafetensorError, safe_open

    name = store.check_new_name(name)
    folder = Path(path)
    missing = [f for f in PEFT_FILES if not (folder / f).is_file() or (folder / f).is_symlink()]
    if missing:
        raise ConfigError(f"{path} is not an adapter folder on this server (no {', '.join(missing)}).")
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        card = json.loads((folder / CARD).read_text(encoding="utf-8")) if (folder / CARD).is_file() else {}
        if not isinstance(config, dict) or not isinstance(card, dict):
            raise ValueError("not a JSON object")
        with safe_open(str(folder / "adapter_model.safetensors"), "pt") as weights:
            if not list(weights.keys()):
                raise ValueError("no tensors")
    except (OSError, ValueError, SafetensorError) as exc:
        raise ConfigError(f"{path} does not hold a readable peft adapter ({exc}).") from exc
    trained_on = card.get("base_model") or Path(str(config.get("base_model_name_or_path", ""))).name
    if trained_on not in (base_model, Path(base_model).name):
        raise ConfigError(
            f"The adapter was trained on {trained_on or 'an unnamed model'}; this server serves {base_model}."
        )
    staging = store.staging(f"load-{name}-{os.getpid()}-{time.time_ns()}")
    try:
        for file in PEFT_FILES + (("confidence.json",) if (folder / "confidence.json").is_file() else ()):
            shutil.copyfile(folder / file, staging / file)
        return store.commit(staging, name, {**card, "base_model": base_model, "loaded_from": str(folder)})
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when the commit renamed it


def deploy(folder: Path, name: str, url: str, key: str, server_path: str | None = None) -> str:
    """Ask the server at ``url`` to load the adapter ``folder`` (seen there as ``server_path``,
    by default the same path) as ``name``; returns the server's reply."""
    import httpx

    endpoint = url.rstrip("/").removesuffix("/v1") + "/v1/load_lora_adapter"
    body = {"lora_name": name, "lora_path": server_path or str(folder)}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        reply = httpx.post(endpoint, json=body, headers=headers, timeout=300)
    except httpx.HTTPError as exc:
        raise ConfigError(f"Could not reach {url} ({exc.__class__.__name__}); check the address.") from exc
    if reply.status_code in (401, 403):
        raise ConfigError(f"{url} refused the key; set TSUMUGI_DEPLOY_KEY to an admin key of that server.")
    if reply.status_code == 404:
        raise ConfigError(
            f"{url} does not load adapters at runtime; start vLLM with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True."
        )
    if reply.status_code >= 400:
        try:
            message = reply.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = reply.text.strip()[:300]
        raise ConfigError(f"{url} did not load the adapter: {message}")
    return reply.text.strip()
