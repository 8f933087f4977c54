"""Deletion and insertion (:func:`backsal.metrics.deletion_insertion`) against a per-pixel loop.

The loop is the straightforward implementation: one image at a time, each step's image built by
copying the perturbed pixels one by one in the map's order, then a batch-1 forward. The batched
path builds every step's image from a rank map with one comparison and runs them in batches.
Both are timed in the same run, on the same maps, and checked to agree.

    python bench/bench_deletion.py                  # ResNet50, 224², CPU, 2 threads
    python bench/bench_deletion.py --device cuda --rows 8 --steps 32

On a CPU the forward of ResNet50 is most of either path's time, so the end-to-end ratio is
bounded by the cost of the forwards; the script also reports the time spent building the
perturbed images alone (the part the loop spends in Python), and the ratio of the two paths there.
Writes ``bench/out/deletion_{cpu,cuda}.json``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torchvision

from backsal.metrics import deletion_insertion
from backsal.metrics.deletion import baseline_images, pixel_ranks, step_counts
from common import machine, timed, write


def _loop_images(image: torch.Tensor, base: torch.Tensor, saliency: torch.Tensor, steps: int):
    """The perturbed images of one row, deletion, built pixel by pixel."""
    height, width = saliency.shape
    order = torch.argsort(-saliency.flatten(), stable=True).tolist()
    for count in step_counts(height * width, steps):
        canvas = image.clone()
        for p in order[:count]:
            row, col = divmod(p, width)
            canvas[:, row, col] = base[:, row, col]
        yield canvas


def _loop(model, images, targets, maps, steps, base):
    curves = []
    with torch.no_grad():
        for row in range(images.shape[0]):
            curve = []
            for canvas in _loop_images(images[row], base[row], maps[row, 0], steps):
                logits = model(canvas[None])
                curve.append(float(logits.softmax(1)[0, targets[row]]))
            curves.append(curve)
    return np.array(curves)


def _loop_building(images, maps, steps, base):
    for row in range(images.shape[0]):
        for _ in _loop_images(images[row], base[row], maps[row, 0], steps):
            pass


def _batched_building(images, maps, steps, base):
    # the batched path's image construction alone, as deletion_insertion does it
    ranks = pixel_ranks(maps)
    limits = torch.tensor(step_counts(maps[0].numel(), steps), device=images.device)
    height, width = images.shape[-2:]
    for row in range(images.shape[0]):
        mask = (ranks[row][None] < limits[:, None]).view(-1, 1, height, width)
        torch.where(mask, base[row][None], images[row][None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="k (the loop is slow: keep small)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval().to(device)  # random weights: timing only
    images = torch.randn(args.rows, 3, args.size, args.size, device=device)
    targets = torch.randint(0, 1000, (args.rows,), device=device)
    maps = torch.rand(args.rows, 1, args.size, args.size, device=device)
    base = baseline_images(images, "blur")

    def batched():
        return deletion_insertion(
            model,
            images,
            targets,
            {"m": {"input": maps}},
            steps=args.steps,
            modes=("deletion",),
            baseline="blur",
            batch_size=args.batch_size,
        )

    result = batched()
    reference = _loop(model, images, targets, maps, args.steps, base)
    got = result.curves["deletion"]["m"]["input"].cpu().numpy()
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-5)

    fast = timed(batched, device)
    slow = timed(lambda: _loop(model, images, targets, maps, args.steps, base), device)
    build_fast = timed(lambda: _batched_building(images, maps, args.steps, base), device)
    build_slow = timed(lambda: _loop_building(images, maps, args.steps, base), device)
    images_run = args.rows * (args.steps + 1)
    print(
        f"ResNet50 {args.size}², {args.rows} rows × {args.steps + 1} steps (deletion), "
        f"{args.device}, {args.threads} threads"
    )
    print(f"{'':<28}{'batched s':>11}{'loop s':>10}{'ratio':>8}")
    print(f"{'end to end':<28}{fast:>11.2f}{slow:>10.2f}{slow / fast:>8.1f}")
    print(
        f"{'building the images':<28}{build_fast:>11.3f}{build_slow:>10.2f}"
        f"{build_slow / build_fast:>8.0f}"
    )
    path = write(
        f"deletion_{device.type}",
        {
            "machine": machine(device),
            "model": "resnet50",
            "size": args.size,
            "rows": args.rows,
            "steps": args.steps,
            "images": images_run,
            "batch_size": args.batch_size,
            "batched_seconds": fast,
            "loop_seconds": slow,
            "ratio": slow / fast,
            "building_batched_seconds": build_fast,
            "building_loop_seconds": build_slow,
            "building_ratio": build_slow / build_fast,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
