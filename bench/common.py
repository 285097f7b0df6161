"""Helpers shared by the benchmark sections: isolation, timing, machine facts."""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _child(fn, args, queue) -> None:
    try:
        result = fn(*args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        queue.put(("ok", result))
    except BaseException as exc:  # reported in the table, not hidden
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def isolated(fn: Callable[..., dict], *args: Any) -> dict:
    """Run ``fn(*args)`` in a fresh process, so its peak memory is its own."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, queue))
    proc.start()
    status, value = queue.get()
    proc.join()
    if status != "ok":
        return {"error": value}
    return value


def without_faq(manual: str) -> str:
    """A contoso manual without its ``## FAQ`` section, whose answers would sit verbatim in
    the passages the FAQ questions retrieve."""
    import re

    return re.split(r"^## FAQ\b", manual, flags=re.M)[0]


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def memory_bandwidth_gbs(size_mb: int = 512, repeats: int = 5) -> float:
    """Sustained copy bandwidth (bytes read + written per second), the ceiling for decoding."""
    a = np.ones(size_mb * 1024 * 1024 // 8)
    b = np.empty_like(a)
    best = min(timed(lambda: np.copyto(b, a)) for _ in range(repeats))
    return 2 * a.nbytes / best / 1e9


NOTABLE_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")
"""The CPU features that change these figures (vector width, bf16 and int8 matrix units)."""


def cpu_flags() -> str:
    """The notable CPU flags, printed with every figure."""
    from knowledge.hardware import cpu_flags as all_flags

    flags = all_flags()
    return " ".join(f for f in NOTABLE_FLAGS if f in flags) or "none of avx2/avx512/amx"


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "cpu_flags": cpu_flags(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
