"""Correctness on a GPU: every CUDA-only path against its CPU (or reference-loop) counterpart.

The test suite runs on CPUs; a few code paths only run on CUDA (the batched meta strategy chosen
by ``auto``, its chunk-size default read from free device memory, device-side metrics). This
script checks, in float64 (so that a ReLU whose input is within rounding of zero cannot flip
between two kernels and make a legitimate difference look like a bug):

1. ``saliency`` on CUDA equals ``saliency`` on the CPU for every named method and backward rule
   (resnet18 and vgg11_bn, random weights, several layers and the input);
2. meta-saliency with the CUDA default strategy (batched, chunked) equals the per-row reference
   loop (``copy.deepcopy`` + one ``torch.optim.SGD`` step) for the six methods of the meta issue,
   also with ``negate=True``, ``steps=2``, a forced chunk size of 3, and per-row convolutions
   run one per row (``backsal.options(per_row_conv="loop")``);
3. the engine with the fused channel-statistics kernel equals it with the eager statistics
   (float32, the kernel's dtype; the kernel alone is tested in Triton's interpreter);
4. ``pointing_hits`` and ``spearman`` on CUDA equal the CPU results.

    python bench/check_cuda.py          # exits 1 if any check fails, after running all
"""

from __future__ import annotations

import copy
import importlib.util
import sys

import torch
import torchvision

import backsal
from backsal.meta import default_chunk_size, select_parameters
from backsal.metrics import pointing_hits, spearman

RTOL = 1e-5  # relative to each map's largest magnitude
META_METHODS = [
    "norm_grad",
    "norm_grad_selective",
    "grad_cam",
    "gradient",
    "linear_approx",
    "guided_backprop",
    "excitation_backprop",  # takes the per-row linear weights whole
]
LAYERS = {
    "resnet18": ["input", "relu", "layer1", "layer2.0", "layer3", "layer4"],
    "vgg11_bn": ["input", "features.2", "features.10", "features.20", "features.27"],
}

failures: list[str] = []


def close(name: str, got: torch.Tensor, want: torch.Tensor, rtol: float = RTOL) -> float:
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    scale = want.flatten(1).abs().amax(1).clamp_min(1e-30).view(-1, *[1] * (want.dim() - 1))
    err = float(((got - want).abs() / scale).max())
    if not err <= rtol:
        failures.append(f"{name}: max relative error {err:.2e} > {rtol:.0e}")
    return err


def model_of(arch: str, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return (
        getattr(torchvision.models, arch)(weights=None, num_classes=20).double().eval().to(device)
    )


def check_engine(arch: str, cuda: torch.device) -> None:
    cpu_model, gpu_model = model_of(arch, torch.device("cpu")), model_of(arch, cuda)
    gpu_model.load_state_dict(cpu_model.state_dict())
    images = torch.randn(4, 3, 64, 64, dtype=torch.float64)
    targets = torch.tensor([3, 7, 3, 11])
    methods = sorted(backsal.NAMED_METHODS)
    real_conv = {"norm_grad_proper"}
    convs = [n for n, m in cpu_model.named_modules() if isinstance(m, torch.nn.Conv2d)][-3:]
    kwargs = dict(method_layers={m: convs for m in real_conv})
    want = backsal.saliency(cpu_model, images, targets, methods, LAYERS[arch], **kwargs)
    got = backsal.saliency(
        gpu_model, images.to(cuda), targets.to(cuda), methods, LAYERS[arch], **kwargs
    )
    worst = 0.0
    for method in methods:
        for layer, ref in want[method].items():
            worst = max(worst, close(f"engine {arch} {method}@{layer}", got[method][layer], ref))
    n = sum(len(v) for v in want.values())
    print(f"engine {arch}: {n} maps over {len(methods)} methods, worst relative error {worst:.1e}")


def reference_meta(model, images, targets, layers, lr, steps, negate):
    out = []
    for r in range(len(targets)):
        copied = copy.deepcopy(model).eval()
        optimizer = torch.optim.SGD(copied.parameters(), lr=lr)
        for _ in range(steps):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(copied(images[r : r + 1]), targets[r : r + 1])
            (-loss if negate else loss).backward()
            optimizer.step()
        out.append(
            backsal.saliency(copied, images[r : r + 1], targets[r : r + 1], META_METHODS, layers)
        )
    return {
        m: {layer: torch.cat([o[m][layer] for o in out]) for layer in layers} for m in META_METHODS
    }


def check_meta(arch: str, cuda: torch.device) -> None:
    model = model_of(arch, cuda)
    layers = LAYERS[arch]
    images = torch.randn(6, 3, 64, 64, device=cuda, dtype=torch.float64)
    images[1] = images[0]  # same image, another class: a different update
    targets = torch.tensor([3, 7, 3, 11, 0, 19], device=cuda)
    chunk = default_chunk_size(
        model, select_parameters(model, None), cuda, len(targets), images[0].numel() * 8
    )
    for label, meta, steps, negate, conv in [
        ("auto", backsal.Meta(lr=1e-2), 1, False, "auto"),
        ("negate", backsal.Meta(lr=1e-2, negate=True), 1, True, "auto"),
        ("steps=2", backsal.Meta(lr=1e-2, steps=2), 2, False, "auto"),
        ("chunk=3", backsal.Meta(lr=1e-2, strategy="batched", chunk_size=3), 1, False, "auto"),
        ("convs per row, steps=2", backsal.Meta(lr=1e-2, steps=2), 2, False, "loop"),
    ]:
        with backsal.options(per_row_conv=conv):
            got = backsal.saliency(model, images, targets, META_METHODS, layers, meta=meta)
        want = reference_meta(model, images, targets, layers, meta.lr, steps, negate)
        worst = 0.0
        for method in META_METHODS:
            for layer in layers:
                worst = max(
                    worst,
                    close(
                        f"meta {arch} {label} {method}@{layer}",
                        got[method][layer],
                        want[method][layer],
                    ),
                )
        print(f"meta {arch} {label}: worst relative error {worst:.1e} (default chunk {chunk})")


def check_fused(cuda: torch.device) -> None:
    """The engine with the Triton statistics kernel against the eager statistics, in float32
    (the kernel's dtype). The kernel alone is tested against the eager code in Triton's
    interpreter by tests/test_fused.py."""
    if importlib.util.find_spec("triton") is None:
        failures.append("Triton is not installed: the fused statistics kernel cannot run")
        return
    worst = 0.0
    model = model_of("resnet18", cuda).float()
    images, targets = (
        torch.randn(4, 3, 64, 64, device=cuda),
        torch.tensor([3, 7, 3, 11], device=cuda),
    )
    names = [m for m in backsal.NAMED_METHODS if m != "norm_grad_proper"] + ["grad_cam"]
    fused = backsal.saliency(model, images, targets, names, LAYERS["resnet18"])
    with backsal.options(fused=False):
        eager = backsal.saliency(model, images, targets, names, LAYERS["resnet18"])
    for name in names:
        for layer in LAYERS["resnet18"]:
            want, got = eager[name][layer], fused[name][layer]
            # c-MWP is a difference of two nearly cancelling MWP maps: compare on their scale
            scale = (
                eager["excitation_backprop"][layer].abs().max() if "contrastive" in name else None
            )
            if scale is not None:
                err = float((got - want).abs().max() / scale.clamp_min(1e-30))
                if err > 1e-4:
                    failures.append(f"engine fused {name}@{layer}: {err:.2e}")
                worst = max(worst, err)
            else:
                worst = max(worst, close(f"engine fused {name}@{layer}", got, want, 1e-4))
    print(f"fused statistics: worst relative error {worst:.1e} (float32)")


def check_metrics(cuda: torch.device) -> None:
    torch.manual_seed(1)
    maps = torch.rand(64, 1, 90, 120)
    masks = torch.rand(64, 90, 120) > 0.995
    hits_cpu = pointing_hits(maps, masks, tolerance=15.0)
    hits_gpu = pointing_hits(maps.to(cuda), masks.to(cuda), tolerance=15.0)
    if not torch.equal(hits_cpu, hits_gpu.cpu()):
        failures.append("pointing_hits differs between CPU and CUDA")
    a = torch.rand(32, 1, 56, 56).round(decimals=1)  # ties
    b = torch.rand(32, 1, 56, 56)
    rho_cpu, rho_gpu = spearman(a, b), spearman(a.to(cuda), b.to(cuda)).cpu()
    if not torch.allclose(rho_cpu, rho_gpu, rtol=1e-5, atol=1e-6):
        failures.append("spearman differs between CPU and CUDA")
    print(
        f"metrics: {int(hits_cpu.sum())}/64 hits equal, spearman max diff "
        f"{float((rho_cpu - rho_gpu).abs().max()):.1e}"
    )


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 2
    cuda = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(cuda)}, torch {torch.__version__}")
    for step in (
        lambda: check_engine("resnet18", cuda),
        lambda: check_engine("vgg11_bn", cuda),
        lambda: check_meta("resnet18", cuda),
        lambda: check_meta("vgg11_bn", cuda),
        lambda: check_fused(cuda),
        lambda: check_metrics(cuda),
    ):
        try:
            step()
        except Exception as error:  # report every check, not only the first that breaks
            failures.append(f"{type(error).__name__}: {error}")
            import traceback

            traceback.print_exc()
    for failure in failures[:40]:
        print("FAIL", failure)
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
