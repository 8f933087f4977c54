"""Shared helpers of the benchmark scripts: timing, device handling, result files.

Torch is imported by the helpers that use it, so that ``workflow.py`` (which runs Snakemake and
no model) can share :data:`OUT` without paying for it."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: Where the JSON results go: ``bench/out`` (git-ignored), or ``$BACKSAL_BENCH_OUT`` (the
#: tests' smoke run of ``bench/gpu.sh`` writes outside the tree).
OUT = Path(os.environ.get("BACKSAL_BENCH_OUT") or Path(__file__).parent / "out")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int = 1) -> float:
    """Best wall time of ``repeats`` runs of ``fn`` (seconds), device work included."""
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def machine(device: torch.device) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write(name: str, payload: dict[str, Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def peak_memory(device: torch.device) -> float | None:
    """Peak allocated device memory in GiB since the last reset (CUDA only)."""
    if device.type != "cuda":
        return None
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30
