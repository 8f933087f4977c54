"""Where batched meta-saliency spends its GPU time, per way of running per-row convolutions.

For resnet50 and vgg16 (224², batch 16, the methods and layers of ``bench_meta.py``) times the
reference loop once, then ``backsal.saliency(..., meta=Meta(strategy="batched"))`` with each
setting of :data:`backsal._per_sample.PER_ROW_CONV`, and prints the profiler's top CUDA kernels.

    python bench/profile_meta.py --device cuda
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from torch.profiler import ProfilerActivity, profile

import backsal
from backsal import _per_sample
from bench_engine import METHODS, layers_of
from bench_meta import reference_loop
from common import machine, peak_memory, timed, write

MODES = ["grouped", "auto", "matmul"]


def profile_arch(arch: str, batch: int, size: int, device: torch.device, top: int) -> dict:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval().to(device)
    layers = layers_of(arch, model)
    images = torch.randn(batch, 3, size, size, device=device)
    targets = torch.randperm(1000, device=device)[:batch]
    reference_loop(model, images[:1], targets[:1], layers, 1e-4)
    t_ref = timed(lambda: reference_loop(model, images, targets, layers, 1e-4), device)
    row: dict = {"arch": arch, "reference_rows_per_s": batch / t_ref}
    try:
        for mode in MODES:
            _per_sample.PER_ROW_CONV = mode
            meta = backsal.Meta(lr=1e-4, strategy="batched", chunk_size=batch)

            def ours(meta: backsal.Meta = meta) -> None:
                backsal.saliency(model, images, targets, METHODS, layers, meta=meta)

            ours()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t = timed(ours, device, repeats=2)
            row[mode] = {
                "rows_per_s": batch / t,
                "speedup": t_ref / t,
                "peak_gib": peak_memory(device),
            }
            print(
                f"{arch} {mode}: {batch / t:.1f} rows/s = {t_ref / t:.2f}x reference "
                f"({batch / t_ref:.1f} rows/s)",
                flush=True,
            )
            with profile(activities=activities) as prof:
                ours()
            key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
            table = prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=60)
            print(table, flush=True)
    finally:
        _per_sample.PER_ROW_CONV = "auto"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--arch", nargs="+", default=["resnet50", "vgg16"])
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    device = torch.device(args.device)
    results = []
    for arch in args.arch:
        results.append(profile_arch(arch, args.batch, args.size, device, args.top))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    write(f"profile_meta_{device.type}", {"machine": machine(device), "results": results})


if __name__ == "__main__":
    main()
