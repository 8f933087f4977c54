"""Does sharing one forward among the rows of an image pay off?

Rows that repeat an image (one image, several target classes) can share its forward and get their
gradients from one batched backward (``torch.autograd.grad(..., is_grads_batched=True)``), or
each row can pay its own forward in an ordinary batch. This measures both on the same rows:
U images × k classes each, for the five methods of bench_engine at every block output.

    python bench/bench_shared_forward.py                 # CPU
    python bench/bench_shared_forward.py --device cuda
"""

from __future__ import annotations

import argparse

import torch
import torchvision

import backsal
from bench_engine import METHODS, layers_of
from common import machine, peak_memory, timed, write


def run(arch: str, images: int, classes: int, size: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval().to(device)
    layers = layers_of(arch, model)
    distinct = torch.randn(images, 3, size, size, device=device)
    index = torch.arange(images, device=device).repeat_interleave(classes)
    targets = torch.randint(0, 1000, (images * classes,), device=device)
    result: dict = {"arch": arch, "images": images, "classes_per_image": classes, "size": size}
    for share in (True, False):

        def call(share: bool = share) -> None:
            backsal.saliency(
                model, distinct, targets, METHODS, layers, image_index=index, share_forward=share
            )

        call()  # warm-up at the measured shapes
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        key = "shared" if share else "per_row"
        result[f"{key}_s"] = timed(call, device, repeats=2)
        result[f"{key}_peak_gib"] = peak_memory(device)
    result["speedup"] = result["per_row_s"] / result["shared_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", nargs="+", default=["resnet50", "vgg16"])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--classes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    device = torch.device(args.device)
    results = []
    for arch in args.arch:
        for classes in args.classes:
            r = run(arch, args.images, classes, args.size, device)
            results.append(r)
            print(
                f"{arch} {args.images} images x {classes} classes: shared forward {r['shared_s']:.2f} s, "
                f"one forward per row {r['per_row_s']:.2f} s -> {r['speedup']:.2f}x",
                flush=True,
            )
    path = write(f"shared_forward_{device.type}", {"machine": machine(device), "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
