"""The model-randomisation sanity check (:func:`backsal.metrics.model_randomisation`) against a
per-(method, layer) loop.

The library computes every method at every layer of a randomisation step from one saliency pass
per backward rule, on parameters passed through ``functional_call``. The baseline does what a
script without the engine does: per step, deep-copy the model and re-initialise its blocks in
place, then call the saliency once per (method, layer). Both runs count their forward passes (a
forward pre-hook, removed afterwards) and are timed in the same run.

    python bench/bench_sanity.py                  # ResNet50, 64², 2 rows, CPU, 2 threads
    python bench/bench_sanity.py --device cuda --size 224 --rows 8

Writes ``bench/out/sanity_{cpu,cuda}.json``.
"""

from __future__ import annotations

import argparse
import copy

import torch
import torchvision

import backsal
from backsal.metrics import model_randomisation, randomised_parameters
from backsal.metrics.sanity import randomisation_steps
from common import machine, timed, write

METHODS = ["gradient", "linear_approx", "norm_grad", "guided_backprop"]
LAYERS = ["layer3", "layer4", "input"]
BLOCKS = ["layer4", "fc"]


def _loop(model, images, targets, size):
    """Deep copy + re-initialise per step, one saliency call per (method, layer)."""

    def maps_of(net):
        return {
            (m, layer): backsal.saliency(net, images, targets, [m], [layer], size=size)[m][layer]
            for m in METHODS
            for layer in LAYERS
        }

    trained = maps_of(model)
    out = []
    for _, randomised in randomisation_steps(BLOCKS, "cascading"):
        net = copy.deepcopy(model)
        drawn = randomised_parameters(model, list(randomised))
        with torch.no_grad():
            for name, parameter in net.named_parameters():
                if name in drawn:
                    parameter.copy_(drawn[name])
        maps = maps_of(net)
        out.append({key: backsal.metrics.spearman(trained[key], maps[key]) for key in trained})
    return out


def _timed_result(fn, device):
    box = []
    seconds = timed(lambda: box.append(fn()), device)
    return seconds, box[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval().to(device)  # random weights: timing only
    images = torch.randn(args.rows, 3, args.size, args.size, device=device)
    targets = torch.randint(0, 1000, (args.rows,), device=device)
    size = (args.size, args.size)
    forwards = [0]

    def count(*_):
        forwards[0] += 1

    handle = model.register_forward_pre_hook(count)  # deep copies carry it along
    try:

        def library():
            return model_randomisation(
                model, images, targets, METHODS, LAYERS, BLOCKS, "cascading", size=size
            )

        # each path runs once, timed, and the two results are compared afterwards
        forwards[0] = 0
        fast, result = _timed_result(library, device)
        library_passes = forwards[0]
        forwards[0] = 0
        slow, reference = _timed_result(lambda: _loop(model, images, targets, size), device)
        loop_passes = forwards[0]
        for step, rhos in enumerate(reference):
            for (method, layer), rho in rhos.items():
                torch.testing.assert_close(
                    result.spearman[method][layer][step], rho, atol=1e-4, rtol=0, equal_nan=True
                )
    finally:
        handle.remove()
    print(
        f"ResNet50 {args.size}², {args.rows} rows, {len(METHODS)} methods × {len(LAYERS)} layers, "
        f"{len(BLOCKS)} cascading steps, {args.device}, {args.threads} threads"
    )
    print(f"{'':<26}{'passes':>8}{'seconds':>10}")
    print(f"{'one pass per rule, step':<26}{library_passes:>8}{fast:>10.2f}")
    print(f"{'per (method, layer) loop':<26}{loop_passes:>8}{slow:>10.2f}")
    print(f"ratio {slow / fast:.1f}×")
    path = write(
        f"sanity_{device.type}",
        {
            "machine": machine(device),
            "model": "resnet50",
            "size": args.size,
            "rows": args.rows,
            "methods": METHODS,
            "layers": LAYERS,
            "blocks": BLOCKS,
            "library_passes": library_passes,
            "loop_passes": loop_passes,
            "library_seconds": fast,
            "loop_seconds": slow,
            "ratio": slow / fast,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
