"""Command line: ``backsal methods``, ``backsal layers MODEL``, ``backsal explain ...``.

``explain`` draws the maps of chosen methods at chosen layers for one image and class into a
figure; the model is a registry name (:func:`backsal.models.available_models`; the published
weights are downloaded on first use) or a torchvision classifier name with random weights.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _model(name: str, resources: str, pretrained: bool):  # noqa: ANN202 - (model, preprocess, seed, contrast)
    import torchvision

    from backsal.models import available_models, get_spec

    if name in available_models():
        spec = get_spec(name)
        if spec.name.startswith("small_"):
            raise SystemExit(
                f"{name} is trained by the workflow: run `make run` and use its checkpoint from Python"
            )
        model = spec.build(pretrained=pretrained, root=resources, download=pretrained)
        return model, spec.preprocess, spec.seed, spec.contrast_layer
    if hasattr(torchvision.models, name):
        from backsal.models import ImageNetPreprocess

        model = getattr(torchvision.models, name)(weights=None).eval()
        return model, ImageNetPreprocess(), "logit", None
    raise SystemExit(
        f"unknown model {name!r}: use one of {', '.join(available_models())} or a torchvision classifier name"
    )


def _methods(_: argparse.Namespace) -> int:
    from backsal.methods import available_methods, get_method

    for name in available_methods():
        method = get_method(name)
        print(f"{name:34s} {method.rule:24s} {method.description}")
    print(
        "\nAny grid entry under another rule: '<rule>:<phase1>/<phase2>', e.g. guided:conv1x1/norm"
    )
    return 0


def _layers(args: argparse.Namespace) -> int:
    model, *_ = _model(args.model, args.resources, pretrained=False)
    print("input")
    for name, module in model.named_modules():
        if name:
            print(f"{name:40s} {type(module).__name__}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from torchvision.io import ImageReadMode, decode_image

    import backsal

    model, preprocess, seed, contrast = _model(
        args.model, args.resources, pretrained=not args.random_weights
    )
    image = decode_image(args.image, mode=ImageReadMode.RGB)
    x = preprocess(image)[None]
    maps = backsal.saliency(
        model, x, torch.tensor([args.target]), args.methods, args.layers, seed=seed,
        size=tuple(image.shape[-2:]), contrast_layer=contrast,
    )  # fmt: skip
    rows, cols = len(args.methods), len(args.layers) + 1
    figure, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows), squeeze=False)
    for r, method in enumerate(args.methods):
        axes[r][0].imshow(image.permute(1, 2, 0).numpy())
        axes[r][0].set_ylabel(method, fontsize=8)
        for c, layer in enumerate(args.layers, start=1):
            axes[r][c].imshow(maps[method][layer][0, 0].detach().cpu().numpy(), cmap="jet")
            if r == 0:
                axes[r][c].set_title(layer, fontsize=8)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"{args.model}, class {args.target}")
    figure.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="backsal", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("methods", help="list the saliency methods").set_defaults(run=_methods)
    layers = commands.add_parser("layers", help="list the layer names of a model")
    layers.add_argument("model")
    layers.set_defaults(run=_layers)
    explain = commands.add_parser("explain", help="draw maps of methods at layers for one image")
    explain.add_argument("--model", required=True)
    explain.add_argument("--image", required=True, help="a JPEG or PNG file")
    explain.add_argument("--target", type=int, required=True, help="the class to explain")
    explain.add_argument(
        "--methods", nargs="+", default=["gradient", "linear_approx", "norm_grad", "grad_cam"]
    )
    explain.add_argument("--layers", nargs="+", default=["input"])
    explain.add_argument("--out", default="saliency.png")
    explain.add_argument(
        "--random-weights", action="store_true", help="do not download weights (a smoke test)"
    )
    explain.set_defaults(run=_explain)
    for sub in (layers, explain):
        sub.add_argument("--resources", default="resources", help="where downloaded weights go")
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
