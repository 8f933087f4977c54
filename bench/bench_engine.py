"""Engine throughput: all methods × all layers in one pass per rule, against per-layer baselines.

Methods {gradient, linear_approx, grad_cam, norm_grad, norm_grad_selective} at every block output
of torchvision resnet50 (stem ReLU, max-pool, the 16 bottlenecks) and at every ReLU of vgg16's
feature extractor (13; the classifier's two ReLUs have no spatial extent), random weights, 224².

Compared, in the same run:
  (a) Captum's LayerGradCam called once per layer (Grad-CAM maps only);
  (b) our engine called once per (method, layer);
  (c) a bare forward + backward to the input (the floor any backprop method pays).
Throughput is maps per second (rows × methods × layers). Targets on the CPU: ≥ 25× (a),
≥ 30× (b), overhead ≤ 1.3× (c).

    python bench/bench_engine.py                  # CPU, batch 32
    python bench/bench_engine.py --device cuda    # GPU, batch 64
"""

from __future__ import annotations

import argparse

import torch
import torchvision

import backsal
from common import machine, peak_memory, timed, write

METHODS = ["gradient", "linear_approx", "grad_cam", "norm_grad", "norm_grad_selective"]


def layers_of(arch: str, model: torch.nn.Module) -> list[str]:
    if arch == "resnet50":
        blocks = [
            f"layer{i}.{j}"
            for i, n in zip(range(1, 5), (3, 4, 6, 3), strict=True)
            for j in range(n)
        ]
        return ["relu", "maxpool", *blocks]
    return [
        name
        for name, m in model.features.named_modules(prefix="features")
        if isinstance(m, torch.nn.ReLU)
    ]


def workload(
    arch: str, batch: int, size: int, device: torch.device
) -> tuple[torch.nn.Module, list[str], torch.Tensor, torch.Tensor]:
    """The benchmarks' setup: torchvision ``arch`` with random weights (seed 0), its layers,
    random images ``[batch, 3, size, size]`` and distinct random targets."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval().to(device)
    images = torch.randn(batch, 3, size, size, device=device)
    targets = torch.randperm(1000, device=device)[:batch]
    return model, layers_of(arch, model), images, targets


def run(
    arch: str, batch: int, size: int, device: torch.device, skip_per_pair: bool, repeats: int
) -> dict:
    model, layers, images, targets = workload(arch, batch, size, device)
    maps_per_call = batch * len(METHODS) * len(layers)

    def ours() -> None:
        backsal.saliency(model, images, targets, METHODS, layers)

    def bare() -> None:
        x = images.detach().requires_grad_(True)
        out = model(x)
        torch.autograd.grad(out, x, torch.nn.functional.one_hot(targets, 1000).float())

    def captum_per_layer() -> None:
        from captum.attr import LayerGradCam

        modules = dict(model.named_modules())
        for layer in layers:
            LayerGradCam(model, modules[layer]).attribute(
                images, target=targets, relu_attributions=True
            )

    def ours_per_pair() -> None:
        for method in METHODS:
            for layer in layers:
                backsal.saliency(model, images, targets, [method], [layer])

    # Warm-up at the measured shapes: the first call at a new shape builds kernels (oneDNN, cuDNN).
    for fn in (ours, bare, captum_per_layer):
        fn()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # Repeats are interleaved and the best of each is kept: on a shared CPU, timings drift by
    # ±10% over minutes, which one run each would mistake for a difference.
    t_ours = t_bare = t_captum = float("inf")
    mem_ours = None
    for _ in range(repeats):
        t_ours = min(t_ours, timed(ours, device))
        mem_ours = peak_memory(device)
        t_bare = min(t_bare, timed(bare, device))
        t_captum = min(t_captum, timed(captum_per_layer, device))
    result = {
        "arch": arch,
        "layers": layers,
        "batch": batch,
        "size": size,
        "maps_per_call": maps_per_call,
        "ours_s": t_ours,
        "ours_maps_per_s": maps_per_call / t_ours,
        "bare_forward_backward_s": t_bare,
        "overhead_vs_bare": t_ours / t_bare,
        "captum_layergradcam_s": t_captum,
        "captum_maps_per_s": batch * len(layers) / t_captum,
        "speedup_vs_captum": (maps_per_call / t_ours) / (batch * len(layers) / t_captum),
        "peak_memory_gib": mem_ours,
    }
    if images.is_cuda:  # the same call with the statistics computed one at a time
        with backsal.options(fused=False):
            ours()
            t_eager = min(timed(ours, device) for _ in range(repeats))
        result["ours_eager_statistics_s"] = t_eager
        result["eager_statistics_overhead_vs_bare"] = t_eager / t_bare
    if not skip_per_pair:
        t_pairs = timed(ours_per_pair, device)
        result["ours_per_pair_s"] = t_pairs
        result["speedup_vs_per_pair"] = t_pairs / t_ours
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--batch", type=int, default=None, help="default: 32 on the CPU, 64 on a GPU"
    )
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--arch", nargs="+", default=["resnet50", "vgg16"])
    parser.add_argument(
        "--repeats", type=int, default=3, help="best of N interleaved runs (not for (b))"
    )
    parser.add_argument(
        "--skip-per-pair", action="store_true", help="skip baseline (b), the slowest"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = args.batch or (64 if device.type == "cuda" else 32)
    results = []
    for arch in args.arch:
        r = run(arch, batch, args.size, device, args.skip_per_pair, args.repeats)
        results.append(r)
        print(
            f"{arch}: {r['maps_per_call']} maps in {r['ours_s']:.2f} s = {r['ours_maps_per_s']:.0f} maps/s | "
            f"vs Captum LayerGradCam per layer {r['speedup_vs_captum']:.1f}x | "
            + (
                f"vs ours per (method, layer) {r['speedup_vs_per_pair']:.1f}x | "
                if "speedup_vs_per_pair" in r
                else ""
            )
            + f"overhead vs bare fwd+bwd {r['overhead_vs_bare']:.2f}x"
            + (
                f" (statistics unfused: {r['eager_statistics_overhead_vs_bare']:.2f}x)"
                if "eager_statistics_overhead_vs_bare" in r
                else ""
            )
            + (
                f" | peak {r['peak_memory_gib']:.1f} GiB"
                if r["peak_memory_gib"] is not None
                else ""
            ),
            flush=True,
        )
    path = write(
        f"engine_{device.type}",
        {"machine": machine(device), "methods": METHODS, "results": results},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
