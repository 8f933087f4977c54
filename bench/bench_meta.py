"""Meta-saliency throughput against the reference loop that produces the same maps.

Reference loop, per row: ``copy.deepcopy(model)``, one ``torch.optim.SGD`` step on that row's
cross-entropy, then the plain saliency (our engine, one pass) of the copy. Ours: ``backsal.saliency(
..., meta=Meta(lr, strategy=...))``. Methods {gradient, linear_approx, grad_cam, norm_grad,
norm_grad_selective} at every block output of resnet50 and every ReLU of vgg16's features,
random weights, 224², batch 16.

    python bench/bench_meta.py                    # CPU: reference loop vs ours (auto = loop)
    python bench/bench_meta.py --device cuda      # GPU: ours auto = batched, chunked
    python bench/bench_meta.py --strategies loop batched
"""

from __future__ import annotations

import argparse
import copy

import torch

import backsal
from backsal.meta import default_chunk_size, select_parameters
from bench_engine import METHODS, workload
from common import machine, peak_memory, timed, write


def reference_loop(model, images, targets, layers, lr):
    out = []
    for r in range(len(targets)):
        copied = copy.deepcopy(model).eval()
        optimizer = torch.optim.SGD(copied.parameters(), lr=lr)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(copied(images[r : r + 1]), targets[r : r + 1]).backward()
        optimizer.step()
        out.append(backsal.saliency(copied, images[r : r + 1], targets[r : r + 1], METHODS, layers))
        del copied, optimizer
    return out


def run(
    arch: str, batch: int, size: int, device: torch.device, strategies: list[str], lr: float
) -> dict:
    model, layers, images, targets = workload(arch, batch, size, device)
    params = select_parameters(model, None)
    result: dict = {"arch": arch, "batch": batch, "size": size, "layers": len(layers), "lr": lr}

    reference_loop(model, images[:1], targets[:1], layers, lr)  # warm-up at batch 1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_ref = timed(lambda: reference_loop(model, images, targets, layers, lr), device)
    result["reference_rows_per_s"] = batch / t_ref
    result["reference_peak_gib"] = peak_memory(device)
    # the plain engine on the same rows: meta's cost per row over the plain pass's (a batched
    # meta pass is at least one more forward and backward with per-row weights: about 3x)
    backsal.saliency(model, images, targets, METHODS, layers)
    t_plain = timed(lambda: backsal.saliency(model, images, targets, METHODS, layers), device)
    result["plain_rows_per_s"] = batch / t_plain
    for strategy in strategies:
        image_bytes = images[0].numel() * images[0].element_size()
        chunk = (
            default_chunk_size(model, params, device, batch, image_bytes)
            if strategy == "batched"
            else 1
        )
        meta = backsal.Meta(lr=lr, strategy=strategy)

        def ours(meta: backsal.Meta = meta) -> None:
            backsal.saliency(model, images, targets, METHODS, layers, meta=meta)

        if strategy == "batched":  # warm-up at the measured shapes
            ours()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t = timed(ours, device)
        result[strategy] = {
            "rows_per_s": batch / t,
            "speedup_vs_reference": t_ref / t,
            "per_row_vs_plain": t / t_plain,
            "chunk_size": chunk,
            "peak_gib": peak_memory(device),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[16], help="one run per value")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--arch", nargs="+", default=["resnet50", "vgg16"])
    parser.add_argument(
        "--strategies", nargs="+", default=None, help="default: loop on the CPU, batched on CUDA"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    strategies = args.strategies or (["batched", "loop"] if device.type == "cuda" else ["loop"])
    results = []
    for arch, batch in ((a, b) for a in args.arch for b in args.batch):
        r = run(arch, batch, args.size, device, strategies, args.lr)
        results.append(r)
        parts = [f"{arch} batch {batch}: reference loop {r['reference_rows_per_s']:.2f} rows/s"]
        for s in strategies:
            q = r[s]
            mem = f", peak {q['peak_gib']:.1f} GiB" if q["peak_gib"] is not None else ""
            parts.append(
                f"{s} {q['rows_per_s']:.2f} rows/s = {q['speedup_vs_reference']:.2f}x, "
                f"{q['per_row_vs_plain']:.1f}x the plain engine per row (chunk {q['chunk_size']}{mem})"
            )
        print(" | ".join(parts), flush=True)
    path = write(
        f"meta_{device.type}" + ("" if args.size == 224 else f"_{args.size}px"),
        {"machine": machine(device), "methods": METHODS, "results": results},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
