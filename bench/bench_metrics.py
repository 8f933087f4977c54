"""Throughput of the batched metrics against straightforward per-query implementations.

* Pointing game: :func:`backsal.metrics.evaluate_maps` on a batch of rows (resize to the original
  size, optional smoothing, argmax, hit test) against a loop that handles one query at a time the
  way TorchRay's benchmark does (resize, smooth, argmax, acceptance disc, ``any``).
* Spearman: :func:`backsal.metrics.spearman` on a batch of map pairs against a loop of
  ``scipy.stats.spearmanr``.

    python bench/bench_metrics.py                  # CPU, 2 threads
    python bench/bench_metrics.py --device cuda

Prints a table and writes ``bench/out/metrics_{cpu,cuda}.json``. The two paths are checked to agree.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from backsal.metrics import INPUT_SMOOTHING, evaluate_maps, gaussian_smooth, spearman
from common import OUT, machine

#: (name, original size (H, W), map size (h, w), smoothing): the offline benchmark's layer maps,
#: and VOC-like images with layer maps and with smoothed input-level maps.
POINTING_CASES = [
    ("digits 64x64, 8x8 maps", (64, 64), (8, 8), 0.0),
    ("voc 375x500, 14x19 maps", (375, 500), (14, 19), 0.0),
    ("voc 375x500, input maps + smooth", (375, 500), (224, 299), INPUT_SMOOTHING),
]
#: (name, map shape): class-sensitivity maps.
SPEARMAN_CASES = [("224x224 maps", (1, 224, 224)), ("64x64 maps", (1, 64, 64))]


def _per_query_pointing(
    maps: torch.Tensor, masks: list[torch.Tensor], tolerance: float, smooth: float
) -> list[bool]:
    """One query at a time, as TorchRay's benchmark loop."""
    hits = []
    for saliency, mask in zip(maps, masks, strict=True):
        saliency = F.interpolate(
            saliency[None], size=tuple(mask.shape), mode="bilinear", align_corners=False
        )
        if smooth > 0:
            saliency = gaussian_smooth(saliency, smooth)
        width = saliency.shape[-1]
        index = int(saliency.flatten().argmax())
        point_x, point_y = index % width, index // width
        rows = (torch.arange(mask.shape[0], device=mask.device, dtype=torch.float32) - point_y) ** 2
        cols = (torch.arange(mask.shape[1], device=mask.device, dtype=torch.float32) - point_x) ** 2
        accept = (rows[:, None] + cols[None, :]) < tolerance**2
        hits.append(bool((mask & accept).any()))
    return hits


def _per_query_spearman(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    a_np, b_np = a.flatten(1).cpu().numpy(), b.flatten(1).cpu().numpy()
    return np.array([stats.spearmanr(x, y).statistic for x, y in zip(a_np, b_np, strict=True)])


def _time(
    device: torch.device, repeats: int, function: Callable[..., object], *arguments: object
) -> float:
    """Best wall time of ``repeats`` calls (after one warm-up), synchronising on CUDA."""
    function(*arguments)
    best = math.inf
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        function(*arguments)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def _random_masks(generator: torch.Generator, count: int, size: tuple[int, int]) -> torch.Tensor:
    height, width = size
    masks = torch.zeros(count, height, width, dtype=torch.bool)
    corners = torch.rand(count, 2, generator=generator)
    extents = 0.1 + 0.4 * torch.rand(count, 2, generator=generator)
    for i in range(count):  # setup only, not timed
        y0, x0 = int(corners[i, 0] * height * 0.6), int(corners[i, 1] * width * 0.6)
        masks[i, y0 : y0 + int(extents[i, 0] * height), x0 : x0 + int(extents[i, 1] * width)] = True
    return masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch)")
    parser.add_argument("--queries", type=int, default=256, help="rows per batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    tolerance = 15.0
    rows = []

    for name, original, map_size, smooth in POINTING_CASES:
        maps = torch.rand(args.queries, 1, *map_size, generator=generator).to(device)
        masks = _random_masks(generator, args.queries, original).to(device)
        mask_list = list(masks)
        batched = evaluate_maps(maps, masks, tolerance, smooth=smooth)
        reference = _per_query_pointing(maps, mask_list, tolerance, smooth)
        if batched.tolist() != reference:
            raise AssertionError(f"{name}: batched and per-query hits differ")
        fast = _time(device, args.repeats, evaluate_maps, maps, masks, tolerance, smooth)
        slow = _time(device, args.repeats, _per_query_pointing, maps, mask_list, tolerance, smooth)
        rows.append(("pointing", name, fast, slow))

    for name, shape in SPEARMAN_CASES:
        a = torch.rand(args.queries, *shape, generator=generator).to(device)
        b = (a + torch.rand(args.queries, *shape, generator=generator).to(device)).contiguous()
        np.testing.assert_allclose(
            spearman(a, b).cpu().numpy(), _per_query_spearman(a, b), atol=1e-9
        )
        fast = _time(device, args.repeats, spearman, a, b)
        slow = _time(device, args.repeats, _per_query_spearman, a, b)
        rows.append(("spearman", name, fast, slow))

    print(f"{args.queries} queries per batch on {args.device} ({args.threads} threads)")
    print(f"{'metric':<10}{'case':<36}{'batched q/s':>13}{'per-query q/s':>15}{'ratio':>8}")
    results = []
    for metric, name, fast, slow in rows:
        ratio = slow / fast
        print(
            f"{metric:<10}{name:<36}{args.queries / fast:>13.0f}{args.queries / slow:>15.0f}"
            f"{ratio:>8.1f}"
        )
        results.append(
            {
                "metric": metric,
                "case": name,
                "batched_seconds": fast,
                "per_query_seconds": slow,
                "batched_queries_per_second": args.queries / fast,
                "per_query_queries_per_second": args.queries / slow,
                "ratio": ratio,
            }
        )
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": machine(torch.device(args.device)),
        "device": args.device,
        "threads": args.threads,
        "queries": args.queries,
        "results": results,
    }
    path = args.out / f"metrics_{torch.device(args.device).type}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
