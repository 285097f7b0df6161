"""What the CPU can do, read once from /proc/cpuinfo: the chat model and the embedder both
compute in bf16 only where the CPU does so natively."""

from __future__ import annotations

import functools


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[-1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16(flags: set[str] | frozenset[str] | None = None) -> bool:
    """True on CPUs that compute in bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is
    emulated and slow."""
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)
