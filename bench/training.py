"""Training throughput: Tsumugi's LoRA and QLoRA against TRL's ``SFTTrainer``.

The baseline is the tool practitioners use: TRL's ``SFTTrainer`` on prompt/completion records
with the loss on the completion only (the assistant's answer, as Tsumugi's), padding-free
batches (a batch's examples in one row, kept apart by their position ids: transformers builds
the block-diagonal mask from them for SDPA on a CPU), and the same LoRA settings (rank 8,
alpha 16, dropout 0.05, all linear layers, learning rate 1e-3, batch 4). Both sides train one
epoch on the same contoso FAQ pairs and are measured on the same ten held-out pairs;
throughput counts the training tokens per second, peak memory is the process's own.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import isolated
from knowledge.progress import drive_events

ROOT = Path(__file__).resolve().parents[1]
FAQ = ROOT / "tests" / "data" / "eval" / "contoso-faq.csv"


HELD_OUT = 10
"""FAQ pairs after the training ones, on which both sides' validation loss is measured."""


def _split(n: int):
    """The first ``n`` FAQ pairs to train on, and the next HELD_OUT to measure."""
    from assistant.tuning.data import load_pairs

    examples = load_pairs(FAQ).examples
    return examples[:n], examples[n : n + HELD_OUT]


def run_tsumugi(quant: str, cache: str, n: int, device: str = "cpu") -> dict:
    from assistant.config import Settings, prepare_environment
    from assistant.generation.config import prepare_embedded
    from assistant.tuning.train import TuneConfig, train_lora

    prepare_environment(Settings())
    source = str(prepare_embedded(Path(cache)))
    train, held_out = _split(n)
    config = TuneConfig.from_preset("quick", quant=quant, device=device, epochs=1, compare_questions=0)
    with tempfile.TemporaryDirectory() as out:
        gen = train_lora(source, train, held_out, config, Path(out))
        metrics = drive_events(gen)
    return {
        "tokens": metrics["tokens"],
        "seconds": metrics["train_seconds"],
        "tokens_per_s": metrics["tokens_per_s"],
        "final_loss": metrics["train_loss"][-1][1],
        "val_loss": metrics["val_loss_after"],
        **({"peak_gpu_mb": metrics["peak_gpu_mb"]} if "peak_gpu_mb" in metrics else {}),
    }


def run_baseline(quant: str, cache: str, n: int, device: str = "cpu") -> dict:
    """TRL's ``SFTTrainer`` as practitioners run it: prompt/completion records with the loss on
    the completion only, padding-free batches, the same LoRA settings."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from assistant.config import Settings, prepare_environment
    from assistant.generation.config import prepare_embedded

    prepare_environment(Settings())
    source = str(prepare_embedded(Path(cache)))
    tokenizer = AutoTokenizer.from_pretrained(source)
    kwargs: dict = {"dtype": torch.float32}
    if quant == "4bit":
        from assistant.generation.quant import bnb_config

        kwargs.update(quantization_config=bnb_config("4bit", compute_dtype=torch.float32), device_map=device)
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def records(examples) -> Dataset:
        return Dataset.from_list(
            [
                {
                    "prompt": [{"role": "user", "content": e.question}],
                    "completion": [{"role": "assistant", "content": e.answer}],
                }
                for e in examples
            ]
        )

    train, held_out = _split(n)
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(
            output_dir=out,
            per_device_train_batch_size=4,
            per_device_eval_batch_size=4,
            num_train_epochs=1,
            learning_rate=1e-3,
            logging_steps=10_000,
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            use_cpu=device == "cpu",
            dataloader_num_workers=0,
            disable_tqdm=True,
            completion_only_loss=True,
            padding_free=True,
            max_length=None,  # FAQ pairs are short; padding-free batches are not cut
            gradient_checkpointing=False,  # TRL's default is on; Tsumugi's quick preset has it off
            bf16=False,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=records(train),
            eval_dataset=records(held_out),
            processing_class=tokenizer,
            peft_config=LoraConfig(
                r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
            ),
        )
        tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
        val_loss = trainer.evaluate()["eval_loss"]
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "final_loss": result.training_loss,
        "val_loss": val_loss,
        **({"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20} if device == "cuda" else {}),
    }


def run(cache: Path, quick: bool, device: str = "cpu") -> list[dict]:
    n = 24 if quick else 48
    rows = []
    for quant in ["none"] if quick else ["none", "4bit"]:
        label = "LoRA fp32" if quant == "none" else "QLoRA 4-bit"
        baseline = isolated(run_baseline, quant, str(cache), n, device)
        ours = isolated(run_tsumugi, quant, str(cache), n, device)
        row = {
            "stage": "training",
            "variant": label,
            "examples": n,
            "baseline": "TRL SFTTrainer (completion-only loss, padding-free)",
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
