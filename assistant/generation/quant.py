"""bitsandbytes quantization (8-bit and 4-bit NF4), kept apart so the rest imports without it.

PyTorch's dynamic int8 quantization was measured too (2.3x the fp32 decode rate on CPU) and
rejected: it changes SmolLM2-135M's greedy answers from the first token on (token F1 against
the contoso FAQ answers fell from 0.40 to 0.16), per-tensor and per-channel alike.
"""

from __future__ import annotations

from knowledge.errors import ConfigError


def bnb_config(precision: str, compute_dtype=None):
    """A ``BitsAndBytesConfig`` for ``8bit`` or ``4bit`` (NF4 with double quantization).

    ``compute_dtype`` is the dtype 4-bit matmuls run in (bf16 unless given).
    """
    try:
        import bitsandbytes  # noqa: F401
        import torch
        from transformers import BitsAndBytesConfig
    except ImportError as exc:
        raise ConfigError(
            f"{precision} precision needs the bitsandbytes package; install it or choose fp32/bf16."
        ) from exc
    if precision == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if precision == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype or torch.bfloat16,
        )
    raise ConfigError(f"`precision` {precision!r} is not a bitsandbytes precision.")


def keep_4bit_trainable(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel.

    On CPUs with AVX512-BF16, the first forward pass in eval mode without gradients (a
    validation loss, a generation) repacks every 4-bit weight in place for ``gemv_4bit``.
    That kernel has no backward: afterwards no gradient flows through the base weights,
    so the LoRA layers below the top one stop learning (measured: validation loss stuck at
    2.9 against 0.24 for the dense model). A model that trains keeps the plain layout,
    whose matmul dequantizes and has a correct backward. Returns the layers changed.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    changed = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed
