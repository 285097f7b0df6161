"""LoRA and QLoRA tuning of a chat model with peft, as a generator of progress events.

- Question/answer examples go through the model's chat template and the loss covers the
  answer tokens only; plain text (continued pre-training) trains on every token.
- Batches hold examples of similar length and are padded only to their longest member,
  never to a fixed maximum: on short support answers this is most of the speed (bench/).
- Validation loss is measured before training, after every epoch and at the end; the run
  ends by answering the validation questions with the adapter switched off and on.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from assistant.tuning.data import Example
from knowledge.errors import Cancelled, ConfigError
from knowledge.progress import Clock, Progress

Preset = Literal["quick", "balanced", "thorough"]
Quant = Literal["4bit", "8bit", "none"]

PRESETS: dict[str, dict] = {
    "quick": dict(rank=8, alpha=16, epochs=4, learning_rate=1e-3),
    "balanced": dict(rank=16, alpha=32, epochs=6, learning_rate=5e-4),
    "thorough": dict(rank=32, alpha=64, epochs=10, learning_rate=3e-4),
}
PRESET_HELP = {
    "quick": "Quick: a few passes over the data, minutes on a CPU for a few dozen pairs.",
    "balanced": "Balanced: more passes and a larger adapter; the usual choice.",
    "thorough": "Thorough: the most passes and the largest adapter, for hundreds of pairs or more.",
}


@dataclass(frozen=True)
class TuneConfig:
    preset: Preset = "quick"
    """Plain-language starting point; the fields below override it."""
    quant: Quant = "4bit"
    """4bit (QLoRA, NF4 with double quantization), 8bit, or none (bf16 on a GPU, fp32 on a CPU)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    rank: int = 8
    """LoRA rank: how much the adapter can learn."""
    alpha: int = 16
    """LoRA scaling; twice the rank is the usual choice."""
    dropout: float = 0.05
    target_modules: str = "all-linear"
    """all-linear, or a comma-separated list such as q_proj,v_proj."""
    learning_rate: float = 1e-3
    epochs: int = 4
    max_length: int = 512
    """Longest example in tokens; longer ones are cut."""
    batch_size: int = 4
    grad_accum: int = 1
    """Batches added up before each optimizer step."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third slower."""
    validation_fraction: float = 0.1
    min_validation: int = 5
    compare_questions: int = 8
    """Validation questions answered before and after, for the side-by-side comparison."""
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.preset not in PRESETS:
            problems.append(f"`preset` should be one of {', '.join(PRESETS)}, got {self.preset!r}.")
        if self.quant not in ("4bit", "8bit", "none"):
            problems.append(f"`quant` should be 4bit, 8bit or none, got {self.quant!r}.")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"`device` should be auto, cpu or cuda, got {self.device!r}.")
        for name, low, high in (
            ("rank", 1, 256),
            ("alpha", 1, 1024),
            ("epochs", 1, 100),
            ("max_length", 32, 32768),
            ("batch_size", 1, 256),
            ("grad_accum", 1, 256),
            ("min_validation", 1, 1000),
            ("compare_questions", 0, 100),
        ):
            value = getattr(self, name)
            if not low <= value <= high:
                problems.append(f"`{name}` should be between {low} and {high}, got {value}.")
        if not 0 <= self.dropout < 1:
            problems.append(f"`dropout` should be at least 0 and below 1, got {self.dropout}.")
        if not 0 < self.learning_rate <= 0.1:
            problems.append(f"`learning_rate` should be above 0 and at most 0.1, got {self.learning_rate}.")
        if not 0 < self.validation_fraction < 0.5:
            problems.append(
                f"`validation_fraction` should be above 0 and below 0.5, got {self.validation_fraction}."
            )
        if not self.target_modules.strip():
            problems.append("`target_modules` should be all-linear or a list of module names.")
        if problems:
            raise ConfigError(" ".join(problems))

    @classmethod
    def from_preset(cls, preset: str = "quick", **overrides) -> TuneConfig:
        if preset not in PRESETS:
            raise ConfigError(f"`preset` should be one of {', '.join(PRESETS)}, got {preset!r}.")
        values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(preset=preset, **values)  # type: ignore[arg-type]

    def modules(self) -> str | list[str]:
        if self.target_modules.strip() == "all-linear":
            return "all-linear"
        return [m.strip() for m in self.target_modules.split(",") if m.strip()]

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    cut: bool = False

    @property
    def trained_tokens(self) -> int:
        return sum(label != -100 for label in self.labels)


def encode_example(tokenizer, example: Example, max_length: int) -> Encoded | None:
    """Token ids and labels: the assistant turns of chat examples, all of a text example.

    Returns None when nothing trainable is left within ``max_length`` (a prompt longer
    than the limit).
    """
    if not example.messages:
        ids = tokenizer(example.text, add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        cut = len(ids) > max_length
        ids = ids[:max_length]
        return Encoded(ids, list(ids), cut)
    chat = example.chat()
    ids = _template_ids(tokenizer, chat, add_generation_prompt=False)
    labels = [-100] * len(ids)
    for i, (role, _) in enumerate(example.messages):
        if role != "assistant":
            continue
        start = len(_template_ids(tokenizer, chat[:i], add_generation_prompt=True))
        end = len(_template_ids(tokenizer, chat[: i + 1], add_generation_prompt=False))
        labels[start:end] = ids[start:end]
    cut = len(ids) > max_length
    ids, labels = ids[:max_length], labels[:max_length]
    if all(label == -100 for label in labels):
        return None
    return Encoded(ids, labels, cut)


def _template_ids(tokenizer, chat: list[dict], add_generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(chat, add_generation_prompt=add_generation_prompt, tokenize=True)
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)


def length_batches(items: list[Encoded], batch_size: int, rng: random.Random | None) -> list[list[Encoded]]:
    """Batches of similar length (sorted within shuffled pools), in random order when ``rng`` is set."""
    order = list(items)
    if rng is not None:
        rng.shuffle(order)
    pool = batch_size * 16
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda e: len(e.input_ids))
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    if rng is not None:
        rng.shuffle(batches)
    return batches


def collate(batch: list[Encoded], pad_id: int, device) -> dict:
    """Pad to the longest example of the batch (right padding; labels padded with -100)."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def load_base_for_training(source: str, quant: str, device: str):
    """The base model for LoRA: quantized with bitsandbytes, or dense (bf16 on GPU, fp32 on CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    kwargs: dict = {}
    if quant in ("4bit", "8bit"):
        from assistant.generation.quant import bnb_config

        # On CPU the 4-bit matmul computes in fp32: bf16 is emulated (slow) on most CPUs.
        kwargs["quantization_config"] = bnb_config(
            quant, compute_dtype=torch.bfloat16 if device == "cuda" else torch.float32
        )
        kwargs["device_map"] = device
        kwargs["dtype"] = torch.float32 if device == "cpu" else torch.bfloat16
    else:
        kwargs["dtype"] = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if "device_map" not in kwargs:
        model.to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def add_lora(model, config: TuneConfig, quantized: bool):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        from assistant.generation.quant import keep_4bit_trainable

        keep_4bit_trainable(model)
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing
        )
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.modules(),
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise ConfigError(f"The LoRA target modules do not fit this model: {exc}") from exc


def validation_loss(model, items: list[Encoded], batch_size: int, pad_id: int) -> float:
    """Mean loss per trained token over ``items``."""
    import torch

    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in length_batches(items, batch_size, None):
            inputs = collate(batch, pad_id, model.device)
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
            shift_logits = logits[:, :-1].float()
            shift_labels = inputs["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)),
                shift_labels.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total += float(loss)
            count += int((shift_labels != -100).sum())
    if was_training:
        model.train()
    return total / max(count, 1)


def greedy_answer(model, tokenizer, example: Example, max_new_tokens: int = 64) -> str:
    import torch

    inputs = tokenizer.apply_chat_template(
        example.chat(upto_last_answer=True), add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def train_lora(
    source: str,
    train: list[Example],
    validation: list[Example],
    config: TuneConfig,
    out_dir: Path,
    cancel: threading.Event | None = None,
) -> Generator[Progress, None, dict]:
    """Train a LoRA adapter of the model at ``source`` and save it to ``out_dir``.

    Yields progress events (stage "training": steps; metrics in ``message``/``metrics``) and
    returns the numbers for the adapter card. Raises ``Cancelled`` when ``cancel`` is set.
    """
    import torch

    from assistant.answering.citations import drop_repeats

    cancel = cancel or threading.Event()
    device = (
        "cuda"
        if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("CUDA was requested but no GPU is available; choose the cpu device.")
    torch.manual_seed(config.seed)
    clock = Clock()
    yield clock.event("loading model", 0, 1, "steps", f"{config.quant} on {device}")
    quantized = config.quant in ("4bit", "8bit")
    try:
        model, tokenizer = load_base_for_training(source, config.quant, device)
    except (torch.OutOfMemoryError, MemoryError) as exc:
        raise ConfigError(
            "The model does not fit in memory for training; choose 4bit, a smaller model, "
            "or a smaller batch size with gradient checkpointing."
        ) from exc
    model = add_lora(model, config, quantized)
    pad_id = tokenizer.pad_token_id

    def encode_all(examples: list[Example]) -> list[Encoded]:
        out = [encode_example(tokenizer, e, config.max_length) for e in examples]
        return [e for e in out if e is not None]

    train_items, val_items = encode_all(train), encode_all(validation)
    if not train_items or not val_items:
        raise ConfigError("No example fits in the maximum length; raise the maximum length.")
    rng = random.Random(config.seed)
    batches_per_epoch = math.ceil(len(train_items) / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    warmup = max(1, total_steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    metrics: dict = {"train_loss": [], "val_loss": [], "steps": total_steps}
    before = validation_loss(model, val_items, config.batch_size, pad_id)
    metrics["val_loss"].append((0, before))
    metrics["val_loss_before"] = before
    clock = Clock()  # the ETA counts training alone
    step, tokens, trained_tokens, validation_seconds = 0, 0, 0, 0.0
    start = time.monotonic()
    model.train()
    event = clock.event("training", 0, total_steps, "steps", f"validation loss {before:.3f}")
    event.metrics = {"val_loss": before, "epoch": 0}
    yield event
    for epoch in range(1, config.epochs + 1):
        batches = length_batches(train_items, config.batch_size, rng)
        for i, batch in enumerate(batches):
            if cancel.is_set():
                raise Cancelled("Training was cancelled; no adapter was saved.")
            inputs = collate(batch, pad_id, model.device)
            loss = model(**inputs).loss / config.grad_accum
            loss.backward()
            tokens += int(inputs["attention_mask"].sum())
            trained_tokens += int((inputs["labels"] != -100).sum())
            if (i + 1) % config.grad_accum == 0 or i + 1 == len(batches):
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                value = float(loss.detach()) * config.grad_accum
                metrics["train_loss"].append((step, value))
                rate = tokens / max(time.monotonic() - start - validation_seconds, 1e-6)
                event = clock.event(
                    "training",
                    step,
                    total_steps,
                    "steps",
                    f"epoch {epoch}/{config.epochs} · loss {value:.3f}",
                )
                event.metrics = {"loss": value, "epoch": epoch, "tokens_per_s": rate, "tokens": tokens}
                yield event
        val_start = time.monotonic()
        val = validation_loss(model, val_items, config.batch_size, pad_id)
        validation_seconds += time.monotonic() - val_start
        metrics["val_loss"].append((step, val))
        event = clock.event(
            "training",
            step,
            total_steps,
            "steps",
            f"epoch {epoch}/{config.epochs} · validation loss {val:.3f}",
        )
        event.metrics = {"val_loss": val, "epoch": epoch}
        yield event
    duration = time.monotonic() - start - validation_seconds  # training alone
    after = metrics["val_loss"][-1][1]
    metrics.update(
        val_loss_after=after,
        perplexity_before=math.exp(min(before, 50)),
        perplexity_after=math.exp(min(after, 50)),
        train_seconds=duration,
        validation_seconds=validation_seconds,
        tokens=tokens,
        trained_tokens=trained_tokens,
        tokens_per_s=tokens / max(duration, 1e-6),
        cut_examples=sum(e.cut for e in train_items + val_items),
        device=device,
    )
    if device == "cuda":
        metrics["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    model.eval()
    chat_examples = [e for e in validation if e.messages][: config.compare_questions]
    comparison = []
    for n, example in enumerate(chat_examples, 1):
        if cancel.is_set():
            raise Cancelled("Training was cancelled; no adapter was saved.")
        yield clock.event(
            "comparing", n - 1, len(chat_examples), "questions", "base model against tuned model"
        )
        # The same clean-up the app applies to answers (repeated sentences and loops cut).
        with model.disable_adapter():
            base = drop_repeats(greedy_answer(model, tokenizer, example))
        tuned = drop_repeats(greedy_answer(model, tokenizer, example))
        comparison.append(
            {"question": example.question, "expected": example.answer, "base": base, "tuned": tuned}
        )
    metrics["comparison"] = comparison
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    return metrics
