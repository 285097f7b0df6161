"""The CUDA path: QLoRA, 8-bit and bf16 static-cache generation on a GPU (marked ``gpu``,
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
    static = {"same_tokens": False, "static": {"tokens_per_s": 80.0}, "dynamic": {"tokens_per_s": 60.0}}
    text = report(info, qlora, {"error": "RuntimeError: no kernel"}, static, [])
    assert text.startswith("# GPU check on NVIDIA H200")
    assert "validation loss 2.500 → 0.400, 9000 tokens/s, peak 900 MB" in text
    assert "| 8-bit load and greedy generation | RuntimeError: no kernel |" in text
    assert "same greedy tokens as the dynamic cache: NO" in text


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
def test_bf16_static_cache_gives_the_dynamic_caches_greedy_tokens(model_cache):
    from bench.gpu_check import static_cache

    result = static_cache(str(model_cache))
    assert result["same_tokens"], (result["static"]["tokens"], result["dynamic"]["tokens"])
