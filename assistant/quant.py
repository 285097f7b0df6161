"""bitsandbytes quantization (8-bit and 4-bit NF4), kept apart so the rest imports without it.

PyTorch's dynamic int8 quantization was measured too (2.3x the fp32 decode rate on CPU) and
rejected: it changes SmolLM2-135M's greedy answers from the first token on (token F1 against
the contoso FAQ answers fell from 0.40 to 0.16), per-tensor and per-channel alike.
"""

from __future__ import annotations

from knowledge.errors import ConfigError


def bnb_config(precision: str):
    """A ``BitsAndBytesConfig`` for ``8bit`` or ``4bit`` (NF4 with double quantization)."""
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
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    raise ConfigError(f"`precision` {precision!r} is not a bitsandbytes precision.")
