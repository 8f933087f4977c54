"""The gradient-CAM family at every block: backsal's one pass against pytorch-grad-cam's loop.

Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM and element-wise Grad-CAM at every block of
torchvision's ResNet50 (``backsal.models.block_layers``: 16 bottleneck outputs), random weights.
backsal computes the 6 × 16 maps from one forward and one backward
(``backsal.saliency``); pytorch-grad-cam 1.5.7 (a test-only peer) runs one CAM object per method
and layer, each a forward and a backward, with the same batch. Both times are measured in the
same run; the ratio is the figure (docs/methods.md §10).

    python bench/bench_cam.py                   # CPU, batch 2 at 112 px
    python bench/bench_cam.py --device cuda --batch 16 --size 224
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from pytorch_grad_cam import (
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import backsal
from backsal.methods import GRADIENT_CAM_METHODS
from backsal.models import block_layers
from common import machine, timed, write

PEERS = {
    "grad_cam": GradCAM,
    "grad_cam_plus_plus": GradCAMPlusPlus,
    "xgrad_cam": XGradCAM,
    "layer_cam": LayerCAM,
    "hires_cam": HiResCAM,
    "grad_cam_elementwise": GradCAMElementWise,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.arch)(weights=None).eval().to(device)
    layers = block_layers(model)
    modules = dict(model.named_modules())
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    targets = torch.randint(0, 1000, (args.batch,), device=device)
    assert set(PEERS) == set(GRADIENT_CAM_METHODS)

    def ours() -> None:
        maps = backsal.saliency(
            model, images, targets, GRADIENT_CAM_METHODS, layers, size=(args.size, args.size)
        )
        assert all(len(maps[m]) == len(layers) for m in GRADIENT_CAM_METHODS)

    def theirs() -> None:
        cam_targets = [ClassifierOutputTarget(int(t)) for t in targets]
        for peer in PEERS.values():
            for layer in layers:
                with peer(model=model, target_layers=[modules[layer]]) as cam:
                    cam(images, cam_targets)

    ours()  # warm-up
    ours_s = timed(ours, device, args.repeats)
    theirs_s = timed(theirs, device, args.repeats)
    result = {
        "arch": args.arch,
        "batch": args.batch,
        "size": args.size,
        "methods": list(GRADIENT_CAM_METHODS),
        "layers": layers,
        "maps": len(GRADIENT_CAM_METHODS) * len(layers) * args.batch,
        "backsal_s": ours_s,
        "pytorch_grad_cam_s": theirs_s,
        "ratio": theirs_s / ours_s,
        "machine": machine(device),
    }
    print(
        f"{args.arch} batch {args.batch} @ {args.size}px, {len(PEERS)} methods × {len(layers)} "
        f"blocks: backsal {ours_s:.2f} s, pytorch-grad-cam {theirs_s:.2f} s, "
        f"ratio {result['ratio']:.1f}×"
    )
    print(f"wrote {write(f'bench_cam_{args.device}', result)}")


if __name__ == "__main__":
    main()
