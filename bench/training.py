"""Training throughput: Tsumugi's LoRA and QLoRA against the usual tutorial recipe.

The baseline is what most LoRA tutorials do: transformers' ``Trainer`` over a dataset
tokenized with ``padding="max_length"`` to 512 tokens (DataCollatorForLanguageModeling,
loss on every token), with the same LoRA settings. Both sides train one epoch on the same
contoso FAQ pairs; throughput counts real (non-padding) tokens per second of training.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import isolated
from knowledge.progress import drive_events

ROOT = Path(__file__).resolve().parents[1]
FAQ = ROOT / "tests" / "data" / "eval" / "contoso-faq.csv"


def _pairs(n: int):
    from assistant.tuning.data import load_pairs

    return load_pairs(FAQ).examples[:n]


def run_tsumugi(quant: str, cache: str, n: int) -> dict:
    from assistant.config import Settings, prepare_environment
    from assistant.generation.config import prepare_embedded
    from assistant.tuning.train import TuneConfig, train_lora

    prepare_environment(Settings())
    source = str(prepare_embedded(Path(cache)))
    examples = _pairs(n)
    config = TuneConfig.from_preset("quick", quant=quant, device="cpu", epochs=1, compare_questions=0)
    with tempfile.TemporaryDirectory() as out:
        gen = train_lora(source, examples, examples[:5], config, Path(out))
        metrics = drive_events(gen)
    return {
        "tokens": metrics["tokens"],
        "seconds": metrics["train_seconds"],
        "tokens_per_s": metrics["tokens_per_s"],
        "final_loss": metrics["train_loss"][-1][1],
    }


def run_baseline(quant: str, cache: str, n: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    from assistant.config import Settings, prepare_environment
    from assistant.generation.config import prepare_embedded

    prepare_environment(Settings())
    source = str(prepare_embedded(Path(cache)))
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    kwargs: dict = {"dtype": torch.float32}
    if quant == "4bit":
        from assistant.generation.quant import bnb_config, keep_4bit_trainable

        kwargs.update(quantization_config=bnb_config("4bit", compute_dtype=torch.float32), device_map="cpu")
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if quant == "4bit":
        keep_4bit_trainable(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(
        model,
        LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    texts = [tokenizer.apply_chat_template(e.chat(), tokenize=False) for e in _pairs(n)]
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=512)
    rows = [
        {"input_ids": ids, "attention_mask": mask}
        for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"])
    ]
    real_tokens = sum(sum(r["attention_mask"]) for r in rows)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=4,
            num_train_epochs=1,
            learning_rate=1e-3,
            logging_steps=10_000,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=rows,
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        )
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
    return {
        "tokens": real_tokens,
        "padded_tokens": 512 * len(rows),
        "seconds": seconds,
        "tokens_per_s": real_tokens / seconds,
        "final_loss": result.training_loss,
    }


def run(cache: Path, quick: bool) -> list[dict]:
    n = 24 if quick else 48
    rows = []
    for quant in ["none"] if quick else ["none", "4bit"]:
        label = "LoRA fp32" if quant == "none" else "QLoRA 4-bit"
        baseline = isolated(run_baseline, quant, str(cache), n)
        ours = isolated(run_tsumugi, quant, str(cache), n)
        row = {
            "stage": "training",
            "variant": label,
            "examples": n,
            "baseline": "Trainer, padded to 512",
            **{f"ours_{k}": v for k, v in ours.items()},
            **{f"baseline_{k}": v for k, v in baseline.items()},
        }
        if "error" in ours or "error" in baseline:
            row["error"] = ours.get("error") or baseline.get("error")
        else:
            row["speedup"] = ours["tokens_per_s"] / baseline["tokens_per_s"]
            row["memory_ratio"] = ours["peak_rss_mb"] / baseline["peak_rss_mb"]
        rows.append(row)
    return rows
