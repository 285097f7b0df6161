"""The CUDA path: QLoRA, 8-bit, static-cache and batched generation on a GPU (marked ``gpu``,
skipped with a reason elsewhere), and the GPU check's behaviour on a machine without one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_cuda(), reason="this machine has a GPU: the gpu tests below run instead")
def test_gpu_check_without_a_gpu_says_so_in_one_sentence(tmp_path):
    out = tmp_path / "gpu.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "No CUDA GPU here: run `make gpu-check` on a machine with one."
    )
    assert not out.exists(), "no report pretends a GPU ran"


def test_gpu_report_names_the_device_and_shows_a_failed_check():
    from bench.gpu_check import report

    info = {"gpu": "NVIDIA H200", "cpu": "x86", "torch": "2.13.0", "python": "3.11"}
    qlora = {"val_loss_before": 2.5, "val_loss_after": 0.4, "tokens_per_s": 9000.0, "peak_gpu_mb": 900.0}
    fp32 = {"same_tokens": False, "agreeing": 5, "static": {"tokens": [1] * 8, "tokens_per_s": 80.0},
            "dynamic": {"tokens": [1] * 8, "tokens_per_s": 60.0}}  # fmt: skip
    static = {"fp32": fp32, "bf16": {**fp32, "agreeing": 3}}
    row = {"clients": 16, "per_min": 300.0, "p50_s": 1.0, "p95_s": 2.0, "errors": 0}
    lengths = {48: {"single": {**row, "clients": 1, "p95_s": 0.5}, "one_at_a_time": {**row, "per_min": 60.0},
                    "batched": row, "throughput_ratio": 5.0, "p95_ratio": 4.0}}  # fmt: skip
    batched = {"label": "bf16, cuda", "prompt_tokens": 1200.0, "lengths": lengths}
    text = report(info, qlora, {"error": "RuntimeError: no kernel"}, static, batched, [])
    assert text.startswith("# GPU check on NVIDIA H200")
    assert "validation loss 2.500 → 0.400, 9000 tokens/s, peak 900 MB" in text
    assert "| 8-bit load and greedy generation | RuntimeError: no kernel |" in text
    assert "fp32: same greedy tokens as the dynamic cache: NO (80 tokens/s static, 60 dynamic)" in text
    assert "bf16: the first 3 of 8 tokens the same" in text
    assert "## Bench rows on CUDA\n\nNot run in this report." in text
    assert "| 48 tokens | one at a time (max_batch=1) | 16 | 60 | 1.00 / 2.00 s | 0 |" in text
    assert "throughput ×5.00 the one-at-a-time path (target ≥ ×3); p95 under load ×4.00" in text


def test_agreement_counts_the_leading_tokens_two_replies_share():
    from bench.gpu_check import _agreeing

    assert (_agreeing([5, 6, 7], [5, 6, 9]), _agreeing([5, 6], [5, 6, 7]), _agreeing([1], [2])) == (2, 2, 0)


@pytest.mark.gpu
def test_quick_qlora_on_cuda_lowers_the_validation_loss(model_cache):
    from bench.gpu_check import quick_qlora

    result = quick_qlora(str(model_cache))
    assert result["val_loss_after"] < 0.5 * result["val_loss_before"], result
    assert result["peak_gpu_mb"] > 0


@pytest.mark.gpu
def test_8bit_generation_on_cuda(model_cache):
    from bench.gpu_check import eight_bit

    result = eight_bit(str(model_cache))
    assert "8bit, cuda" in result["label"] and result["text"].strip()


@pytest.mark.gpu
def test_fp32_static_cache_gives_the_dynamic_caches_greedy_tokens(model_cache):
    from bench.gpu_check import static_cache

    fp32 = static_cache(str(model_cache))["fp32"]
    assert fp32["same_tokens"], (fp32["static"]["tokens"], fp32["dynamic"]["tokens"])
