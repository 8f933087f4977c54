"""Deletion and insertion (:func:`backsal.metrics.deletion_insertion`) against a per-pixel loop.

The loop is the straightforward implementation: one image at a time, each step's image built by
copying the perturbed pixels one by one in the map's order, then a batch-1 forward, for every
map and mode. The batched path builds every step's image from a rank map with one comparison,
runs them in batches, and runs the two images every curve of a row shares (the image itself and
the baseline) once per row. Both are timed in the same run, on the same maps, and checked to agree.
The batched path runs as ``deletion_insertion`` runs by default (on a CPU: a few images per
forward, channels-last batches) unless ``--batch-size`` / ``--memory-format`` say otherwise; two
more rows time it with NCHW batches, at that batch size and at 16 images per forward, to show what
each of the two choices buys.

    python bench/bench_deletion.py                  # ResNet50, 224², CPU, 2 threads
    python bench/bench_deletion.py --maps 1 --modes deletion   # one curve per row
    python bench/bench_deletion.py --device cuda --rows 8 --steps 32

On a CPU the forward of ResNet50 is most of either path's time, so the end-to-end ratio is
bounded by the number of forwards and their cost; the script prints both paths' image counts,
and the time spent building the perturbed images alone (the part the loop spends in Python),
with the ratio of the two paths there. Writes ``bench/out/deletion_{cpu,cuda}.json``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torchvision

from backsal.metrics import deletion_insertion
from backsal.metrics.deletion import (
    MEMORY_FORMATS,
    MODES,
    baseline_images,
    forward_batch_size,
    pixel_ranks,
    step_counts,
)
from common import machine, timed, write


def _loop_images(image, base, saliency, steps, mode):
    """The perturbed images of one row and mode, built pixel by pixel."""
    height, width = saliency.shape
    order = torch.argsort(-saliency.flatten(), stable=True).tolist()
    start, source = (image, base) if mode == "deletion" else (base, image)
    for count in step_counts(height * width, steps):
        canvas = start.clone()
        for p in order[:count]:
            row, col = divmod(p, width)
            canvas[:, row, col] = source[:, row, col]
        yield canvas


def _loop(model, images, targets, maps, steps, base, modes):
    """``{(map, mode): [B, k+1]}``: one batch-1 forward per row, step, map and mode."""
    curves = {}
    with torch.no_grad():
        for name, saliency in maps.items():
            for mode in modes:
                rows = []
                for row in range(images.shape[0]):
                    curve = []
                    for canvas in _loop_images(
                        images[row], base[row], saliency[row, 0], steps, mode
                    ):
                        logits = model(canvas[None])
                        curve.append(float(logits.softmax(1)[0, targets[row]]))
                    rows.append(curve)
                curves[name, mode] = np.array(rows)
    return curves


def _loop_building(images, maps, steps, base, modes):
    for saliency in maps.values():
        for mode in modes:
            for row in range(images.shape[0]):
                for _ in _loop_images(images[row], base[row], saliency[row, 0], steps, mode):
                    pass


def _batched_building(images, maps, steps, base, modes):
    # the batched path's image construction alone, as deletion_insertion does it
    limits = torch.tensor(step_counts(images[0, 0].numel(), steps), device=images.device)
    height, width = images.shape[-2:]
    for saliency in maps.values():
        ranks = pixel_ranks(saliency)
        for mode in modes:
            start, source = (images, base) if mode == "deletion" else (base, images)
            for row in range(images.shape[0]):
                mask = (ranks[row][None] < limits[:, None]).view(-1, 1, height, width)
                torch.where(mask, source[row][None], start[row][None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="k (the loop is slow: keep small)")
    parser.add_argument("--maps", type=int, default=2, help="maps per row (methods × layers)")
    parser.add_argument("--modes", choices=[*MODES, "both"], default="both")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="images per forward (default: the library's)"
    )
    parser.add_argument("--memory-format", choices=MEMORY_FORMATS, default="auto")
    parser.add_argument(
        "--repeats", type=int, default=3, help="best of N runs of each path (one run can be "
        "10-20%% off on a shared machine)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    modes = MODES if args.modes == "both" else (args.modes,)
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval().to(device)  # random weights: timing only
    images = torch.randn(args.rows, 3, args.size, args.size, device=device)
    targets = torch.randint(0, 1000, (args.rows,), device=device)
    maps = {
        f"m{i}": torch.rand(args.rows, 1, args.size, args.size, device=device)
        for i in range(args.maps)
    }
    base = baseline_images(images, "blur")

    batch_size = forward_batch_size(images) if args.batch_size is None else args.batch_size

    def batched(size=batch_size, memory_format=args.memory_format):
        return deletion_insertion(
            model,
            images,
            targets,
            {name: {"input": m} for name, m in maps.items()},
            steps=args.steps,
            modes=modes,
            baseline="blur",
            batch_size=size,
            memory_format=memory_format,
        )

    seen: list[int] = []  # images per forward of the batched path, counted on the model
    hook = model.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].shape[0]))
    result = batched()
    hook.remove()
    batched_images = sum(seen)
    reference = _loop(model, images, targets, maps, args.steps, base, modes)
    for (name, mode), curve in reference.items():
        got = result.curves[mode][name]["input"].cpu().numpy()
        np.testing.assert_allclose(got, curve, rtol=0, atol=1e-5)

    repeats = args.repeats
    fast = timed(batched, device, repeats)
    nchw = timed(lambda: batched(memory_format="contiguous"), device, repeats)
    nchw_16 = timed(lambda: batched(16, "contiguous"), device, repeats)
    slow = timed(
        lambda: _loop(model, images, targets, maps, args.steps, base, modes), device, repeats
    )
    build_fast = timed(lambda: _batched_building(images, maps, args.steps, base, modes), device)
    build_slow = timed(lambda: _loop_building(images, maps, args.steps, base, modes), device)
    curves = args.rows * args.maps * len(modes)
    loop_images = curves * (args.steps + 1)
    print(
        f"ResNet50 {args.size}², {args.rows} rows × {args.maps} maps × {'+'.join(modes)}, "
        f"k = {args.steps}, {args.device}, {args.threads} threads; batched: {batch_size} images "
        f"per forward, memory_format={args.memory_format!r}"
    )
    print(f"{'':<28}{'batched':>11}{'loop':>10}{'ratio':>8}")
    print(f"{'images through the model':<28}{batched_images:>11}{loop_images:>10}"
          f"{loop_images / batched_images:>8.2f}")  # fmt: skip
    print(f"{'end to end (s)':<28}{fast:>11.2f}{slow:>10.2f}{slow / fast:>8.1f}")
    print(f"{'  NCHW batches':<28}{nchw:>11.2f}{slow:>10.2f}{slow / nchw:>8.1f}")
    print(f"{'  NCHW, 16 per forward':<28}{nchw_16:>11.2f}{slow:>10.2f}{slow / nchw_16:>8.1f}")
    print(
        f"{'building the images (s)':<28}{build_fast:>11.3f}{build_slow:>10.2f}"
        f"{build_slow / build_fast:>8.0f}"
    )
    path = write(
        f"deletion_{device.type}",
        {
            "machine": machine(device),
            "model": "resnet50",
            "size": args.size,
            "rows": args.rows,
            "maps": args.maps,
            "modes": list(modes),
            "steps": args.steps,
            "images": loop_images,
            "batched_images": batched_images,
            "batch_size": batch_size,
            "memory_format": args.memory_format,
            "repeats": repeats,
            "batched_seconds": fast,
            "batched_nchw_seconds": nchw,
            "batched_nchw_16_seconds": nchw_16,
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
