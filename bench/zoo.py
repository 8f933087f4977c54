"""Every classifier of torchvision, explained at every block: maps per second and overhead.

For each model of ``torchvision.models.list_models(module=torchvision.models)`` (random weights):
the plain-rule methods of the README's table (gradient, linear_approx, norm_grad, Grad-CAM and
the gradient-CAM family) at every block (``backsal.models.block_layers``) in one
``backsal.saliency`` call, against a bare forward + backward of the same batch to the input.
Reported per model: blocks, maps/s and the overhead ratio (saliency time / bare pass time).
A model that fails is reported with its error and the run goes on.

    python bench/zoo.py --batch 2                       # CPU; every model (long)
    python bench/zoo.py --models resnet50 swin_t --device cuda --batch 16
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

import backsal
from backsal.methods import GRADIENT_CAM_METHODS
from backsal.models import block_layers
from common import machine, timed, write

METHODS = ["gradient", "linear_approx", "norm_grad", *GRADIENT_CAM_METHODS]


def _side(model: torch.nn.Module, default: int) -> int:
    return int(getattr(model, "image_size", default))  # ViTs fix their input size


def run(name: str, batch: int, size: int, device: torch.device, repeats: int) -> dict:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval().to(device)
    side = _side(model, size)
    images = torch.randn(batch, 3, side, side, device=device)
    targets = torch.randint(0, 1000, (batch,), device=device)
    layers = block_layers(model)

    def bare() -> None:
        x = images.detach().requires_grad_(True)
        scores = model(x)
        torch.autograd.grad(scores.gather(1, targets[:, None]).sum(), x)

    def explain() -> None:
        backsal.saliency(model, images, targets, METHODS, layers)

    bare()
    explain()  # warm-up
    bare_s = timed(bare, device, repeats)
    explain_s = timed(explain, device, repeats)
    maps = len(METHODS) * len(layers) * batch
    return {
        "model": name,
        "side": side,
        "blocks": len(layers),
        "maps": maps,
        "bare_s": bare_s,
        "saliency_s": explain_s,
        "maps_per_s": maps / explain_s,
        "overhead": explain_s / bare_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=None, help="default: every classifier")
    args = parser.parse_args()
    device = torch.device(args.device)
    names = args.models or torchvision.models.list_models(module=torchvision.models)
    rows, start = [], time.perf_counter()
    print(f"{'model':22s} {'side':>4s} {'blocks':>6s} {'maps/s':>9s} {'overhead':>8s}")
    for name in names:
        try:
            row = run(name, args.batch, args.size, device, args.repeats)
            print(
                f"{name:22s} {row['side']:4d} {row['blocks']:6d} {row['maps_per_s']:9.1f} "
                f"{row['overhead']:7.2f}×",
                flush=True,
            )
        except Exception as error:  # noqa: BLE001 - report and go on to the next model
            row = {"model": name, "error": f"{type(error).__name__}: {error}"}
            print(f"{name:22s} FAILED {row['error']}", flush=True)
        rows.append(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    payload = {
        "methods": METHODS,
        "batch": args.batch,
        "device": str(device),
        "total_s": time.perf_counter() - start,
        "models": rows,
        "machine": machine(device),
    }
    print(f"wrote {write(f'zoo_{device.type}', payload)}")


if __name__ == "__main__":
    main()
