"""The local backend: a transformers causal LM with its tokenizer and chat template."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from assistant.generation.backend import ModelError
from assistant.generation.config import ModelConfig, resolve_model_source


class ChatModel:
    """A causal LM with its tokenizer and chat template, ready to stream replies; with
    ``config.adapter``, replies come from that LoRA adapter on the base weights.

    :meth:`adapted` gives the same model with another adapter: one copy of the base weights
    and one batch serve the base model and all its adapters."""

    def __init__(self, config: ModelConfig, cache_dir: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from assistant.generation.batch import BASE, Batcher

        self.config = config
        self.device = config.resolved_device()
        self.precision = config.resolved_precision()
        source = resolve_model_source(config.name, cache_dir)
        kwargs: dict = {}
        if self.precision in ("8bit", "4bit"):
            from assistant.generation.quant import bnb_config

            kwargs["quantization_config"] = bnb_config(self.precision)
            kwargs["device_map"] = self.device
        else:
            kwargs["dtype"] = torch.bfloat16 if self.precision == "bf16" else torch.float32
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
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
            model.to(self.device)
        model.eval()
        if self.tokenizer.chat_template is None:
            raise ModelError(
                f"The model {config.name!r} has no chat template; choose an instruct/chat model."
            )
        self.batcher = Batcher(model, self.tokenizer, config.max_batch)
        """Every reply of this model and its adapters is generated here, in batches (first
        come, first served)."""
        self.adapter = BASE
        """The adapter's peft name in the batch's model."""
        if config.adapter:
            self.adapter = self._load_adapter(config.adapter)
        self.last_stats: dict[str, int] = {}
        """Prompt and generated token counts of the latest ``stream`` call."""

    @property
    def model(self):
        """The batch's model: the base, or a peft model holding every adapter loaded so far."""
        return self.batcher.model

    def adapted(self, adapter_dir: str | Path) -> ChatModel:
        """This model answering with the LoRA adapter in ``adapter_dir`` (loaded once, beside
        the base weights; its replies share this model's batch)."""
        view = copy.copy(self)
        view.adapter = self._load_adapter(str(adapter_dir))
        view.config = replace(self.config, adapter=str(adapter_dir))
        view.last_stats = {}
        return view

    def _load_adapter(self, adapter_dir: str) -> str:
        try:
            return self.batcher.load_adapter(str(adapter_dir))
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise misfit(adapter_dir, exc) from exc

    @property
    def label(self) -> str:
        adapter = f" + {Path(self.config.adapter).name}" if self.config.adapter else ""
        return f"{self.config.name}{adapter} ({self.precision}, {self.device})"

    def logprobs_content(self, info: dict) -> list[dict]:
        """The tokens of the reply ``info`` describes, with their log-probabilities, as the
        OpenAI protocol's ``choices[].logprobs.content``."""
        tokens = [self.tokenizer.decode([t]) for t in info.get("token_ids", [])]
        return [
            {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8")), "top_logprobs": []}
            for t, lp in zip(tokens, info.get("token_logprobs", []))
        ]

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

        The request joins the model's running batch (:mod:`assistant.generation.batch`).
        ``info``, when given, receives ``prompt_tokens``, ``new_tokens`` and ``token_logprobs``:
        the log-probability the model gave each token it generated, for confidence scores.
        """
        from assistant.generation.batch import Request

        prompt = self.encode_chat(messages)["input_ids"][0].tolist()
        stats = info if info is not None else {}
        stats.update(prompt_tokens=len(prompt), new_tokens=0, token_logprobs=[], token_ids=[])
        self.last_stats = stats
        request = Request(prompt, max_new_tokens, temperature, stop, stats, self.adapter)
        self.batcher.submit(request)
        try:
            yield from request.pieces()
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"Generation failed: {exc}") from exc


def misfit(adapter_dir: str | Path, exc: Exception) -> ModelError:
    return ModelError(
        f"The adapter in {adapter_dir} does not fit this base model ({exc.__class__.__name__}); "
        "choose the base model it was trained on."
    )


def load_merged(base: str, adapter_dir: str | Path, cache_dir: Path):
    """The base model in fp32 with the adapter merged into its weights, and its tokenizer
    (for export)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model_source(base, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    try:
        return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload(), tokenizer
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise misfit(adapter_dir, exc) from exc
