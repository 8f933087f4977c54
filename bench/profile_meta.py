"""Batched meta-saliency on a GPU, one optimisation at a time, and where its time goes.

For resnet50 and vgg16 (224², batch 16, the methods and layers of ``bench_meta.py``) times the
reference loop once, then ``backsal.saliency(..., meta=Meta(strategy="batched", chunk_size=batch))``
under the settings of :data:`VARIANTS`, from the first GPU version to the current default:

* ``first``: per-row convolutions as grouped convolutions, every per-row parameter materialised,
  statistics computed one at a time;
* ``matmul``: per-row convolutions as batched matrix products where that is faster
  (``backsal.options(per_row_conv="auto")``);
* ``+low_rank``: linear weights' per-row updates kept as factors (``low_rank_linear``);
* ``+fused``: channel statistics in one Triton kernel (``fused``);
* ``+shared``: the step's gradient pass, where every row still holds θ, runs its convolutions as
  ordinary ones with per-row weight gradients (``shared_rows``) — the default;
* ``loop+...``: the per-row convolutions too large for matrix products run as one ordinary
  convolution per row instead of as groups (``per_row_conv="loop"``);
* ``tf32+...``: the matrix products under the convolution precision policy
  (``conv_precision``).

Then prints the profiler's top CUDA operations of the default.

    python bench/profile_meta.py --device cuda
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

import backsal
from bench_engine import METHODS, workload
from bench_meta import reference_loop
from common import machine, peak_memory, timed, write

# name -> (per_row_conv, conv_precision, low_rank_linear, fused, shared_rows)
VARIANTS = {
    "first": ("grouped", False, False, False, False),  # the first GPU version
    "matmul": ("auto", False, False, False, False),
    "matmul+low_rank": ("auto", False, True, False, False),
    "matmul+low_rank+fused": ("auto", False, True, True, False),
    "matmul+low_rank+fused+shared": ("auto", False, True, True, True),  # the default
    "loop+low_rank+fused+shared": ("loop", False, True, True, True),
    "tf32+low_rank+fused+shared": ("auto", True, True, True, True),
}
DEFAULT = "matmul+low_rank+fused+shared"


def configure(conv: str, precision: bool, low_rank: bool, fused: bool, shared: bool) -> None:
    backsal.set_options(
        per_row_conv=conv,
        conv_precision=precision,
        low_rank_linear=low_rank,
        fused=fused,
        shared_rows=shared,
    )


def profile_arch(arch: str, batch: int, size: int, device: torch.device, top: int) -> dict:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    model, layers, images, targets = workload(arch, batch, size, device)
    reference_loop(model, images[:1], targets[:1], layers, 1e-4)
    t_ref = timed(lambda: reference_loop(model, images, targets, layers, 1e-4), device)
    row: dict = {"arch": arch, "batch": batch, "reference_rows_per_s": batch / t_ref}
    meta = backsal.Meta(lr=1e-4, strategy="batched", chunk_size=batch)

    def ours() -> None:
        backsal.saliency(model, images, targets, METHODS, layers, meta=meta)

    default = VARIANTS[DEFAULT]
    try:
        for name, settings in VARIANTS.items():
            configure(*settings)
            ours()  # warm-up (kernels, autotuning) at the measured shapes
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t = timed(ours, device, repeats=5)
            row[name] = {
                "rows_per_s": batch / t,
                "speedup": t_ref / t,
                "peak_gib": peak_memory(device),
            }
            print(
                f"{arch} {name}: {batch / t:.1f} rows/s = {t_ref / t:.2f}x the reference loop "
                f"({batch / t_ref:.1f} rows/s)",
                flush=True,
            )
        configure(*default)
        with profile(activities=activities) as prof:
            ours()
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=60))
    finally:
        configure(*default)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
    name = f"profile_meta_{device.type}" + ("" if args.size == 224 else f"_{args.size}px")
    write(name, {"machine": machine(device), "results": results})


if __name__ == "__main__":
    main()
