"""The local backend: a transformers causal LM with its tokenizer and chat template."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from assistant.generation.backend import ModelError
from assistant.generation.config import ModelConfig, resolve_model_source


class ChatModel:
    """A causal LM with its tokenizer and chat template, ready to stream replies."""

    def __init__(self, config: ModelConfig, cache_dir: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from assistant.generation.batch import Batcher

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
        self.batcher = Batcher(self.model, self.tokenizer, config.max_batch)
        """Every reply of this model is generated here, in batches (first come, first served)."""
        self.last_stats: dict[str, int] = {}
        """Prompt and generated token counts of the latest ``stream`` call."""

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
        request = Request(prompt, max_new_tokens, temperature, stop, stats)
        self.batcher.submit(request)
        try:
            yield from request.pieces()
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"Generation failed: {exc}") from exc


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
