"""The local backend: a transformers causal LM with its tokenizer and chat template."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from assistant.generation.backend import ModelError
from assistant.generation.config import ModelConfig, resolve_model_source
from assistant.generation.loops import is_looping, repeats_sentence

ABANDONED_AFTER_S = 30.0
"""A reply nobody has read for this long is stopped: the backstop for a caller that neither
closes the stream nor sets its stop event."""


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
        self.lock = FairLock()
        """Generation is serialised per model: two at once only slow each other down on CPU.
        First come, first served, so web and API users wait alike under load."""
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
        stats.update(prompt_tokens=prompt_len, new_tokens=0, token_logprobs=[], token_ids=[])
        self.last_stats = stats
        step: dict = {}

        class _Record(LogitsProcessor):
            """Keeps this step's log-probabilities; the token chosen from them is known at the stop check."""

            def __call__(self, input_ids, scores):
                step["logprobs"] = torch.log_softmax(scores[0].float(), dim=-1)
                return scores

        closed = threading.Event()
        """Set when the caller stops reading: the generator was closed (Stop, a client gone)."""
        suspended: list[float] = []
        """When the caller last took a piece and has not asked for the next one yet."""

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs) -> bool:
                if "logprobs" in step:
                    stats["token_logprobs"].append(float(step.pop("logprobs")[input_ids[0, -1]]))
                    stats["token_ids"].append(int(input_ids[0, -1]))
                if closed.is_set() or (stop is not None and stop.is_set()):
                    return True
                if suspended and time.monotonic() - suspended[0] > ABANDONED_AFTER_S:
                    return True  # nobody is reading: a caller dropped the stream without closing it
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
            # The lock is held by the generation itself, not by the reader: a reader that
            # stops reading (and is never closed) cannot keep the model from the next request.
            try:
                with self.lock, torch.inference_mode():
                    if not closed.is_set() and not (stop is not None and stop.is_set()):
                        self.model.generate(**kwargs)
                    else:
                        streamer.end()
            except BaseException as exc:  # surfaced to the caller below
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            for piece in streamer:
                suspended[:] = [time.monotonic()]
                yield piece
                suspended.clear()
        finally:
            closed.set()  # a closed generator (Stop, a client gone) ends the generation
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
