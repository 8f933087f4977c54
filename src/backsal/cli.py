"""Command line: ``backsal methods``, ``backsal layers MODEL``, ``backsal explain IMAGES ...``.

``explain`` draws the maps of chosen methods at chosen layers over each image, for the model's
top-1 class (or ``--target`` classes, or the ``--topk`` best), into one figure per (image, class);
``--save-maps`` keeps the raw maps as arrays. The model is a registry name
(:func:`backsal.models.available_models`), any torchvision classifier with ``--weights``, a
``module:function`` factory, each optionally with ``--checkpoint`` (see
:mod:`backsal.models.loading`).

Every mistake in the arguments or inputs ends the command with a one-line message on stderr
and exit code 2; ``--debug`` shows the traceback as well.

examples:
  backsal explain cat.jpg --model resnet50 --layers input layer3 layer4
  backsal explain photos/ --model vgg16 --weights IMAGENET1K_V1 --topk 3 --save-maps maps.npz
  backsal explain 'scans/*.png' --model resnet18 --checkpoint mine.pt --num-classes 4 --target 2
"""

from __future__ import annotations

import argparse
import difflib
import shlex
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import torch

    from backsal.models import Seed
    from backsal.models.loading import LoadedModel

__all__ = ["main"]

_DEFAULT_METHODS = ["gradient", "linear_approx", "norm_grad", "grad_cam"]


class _UsageError(Exception):
    """A mistake of the user's: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line (argparse prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input, not a bug (imported on use: torch is slow)."""
    from backsal.data.download import ResourceError
    from backsal.data.files import ImageFileError
    from backsal.models.checkpoint import CheckpointError
    from backsal.models.loading import ModelLoadError, WeightsDownloadError

    return (
        _UsageError, ImageFileError, CheckpointError, ModelLoadError, WeightsDownloadError,
        ResourceError,  # the registry's weights: a failed download or checksum
    )  # fmt: skip


def _checked(what: str, call: Any, *args: Any, then: str = "", **kwargs: Any) -> Any:
    """``call(*args, **kwargs)`` with its ``ValueError``/``KeyError`` reported as a user error,
    ``then`` (what to do) as its last line."""
    try:
        return call(*args, **kwargs)
    except (ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise _UsageError(f"{what}: {message}" + (f"\n{then}" if then else "")) from error


def _load(args: argparse.Namespace) -> LoadedModel:
    from backsal.models.loading import load_model

    weights = args.weights
    if getattr(args, "random_weights", False):
        weights = "none"
    if weights is None:  # not given: pretrained, unless a checkpoint brings its own weights
        weights = "none" if getattr(args, "checkpoint", None) else "DEFAULT"
    return load_model(
        args.model,
        weights=weights,
        checkpoint=getattr(args, "checkpoint", None),
        num_classes=getattr(args, "num_classes", None),
        root=args.resources,
    )


# --------------------------------------------------------------------------------------------
# methods, layers
# --------------------------------------------------------------------------------------------


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
    args.weights = "none"  # names do not depend on weights: never download for a listing
    import torch

    from backsal.capture import probe_marks
    from backsal.models.blocks import block_layers

    loaded = _load(args)
    size = getattr(loaded.model, "image_size", 224)  # ViTs fix their input size
    try:
        blocks = set(block_layers(loaded.model))
    except ValueError:  # a model without blocks: the marks still list what can be probed
        blocks = set()
    print("input")
    for mark in probe_marks(loaded.model, torch.zeros(1, 3, size, size)):
        tag = ("block " if mark.name in blocks else "") + (mark.layout or "")
        line = f"{mark.name:48s} {mark.kind:28s} {tag}"
        if not mark.probeable:
            line += f"not probeable: {mark.reason}; probe {mark.instead}"
        print(line.rstrip())
    return 0


# --------------------------------------------------------------------------------------------
# explain: checks first, then batches of images
# --------------------------------------------------------------------------------------------


def _figure_suffix(path: Path) -> str:
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise _UsageError(
            f"cannot write a figure as {path.suffix or 'a file without suffix'!r} ({path}): use "
            f"one of {', '.join('.' + f for f in sorted(formats))}"
        )
    return suffix


def _device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise _UsageError(f"unknown device {name!r}: use cpu, cuda, cuda:N or auto") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise _UsageError(f"device {name!r}: no CUDA GPU is available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise _UsageError(f"device {name!r}: there are {torch.cuda.device_count()} GPUs")
    return device


def _resolve_target(token: str, class_names: Sequence[str] | None) -> int:
    """A ``--target`` token (an index or a class name) -> class index."""
    if token.isdigit():
        index = int(token)
        if class_names is not None and index >= len(class_names):
            raise _UsageError(
                f"target {index} is out of range: the model has {len(class_names)} classes "
                f"(0..{len(class_names) - 1})"
            )
        return index
    if class_names is None:
        raise _UsageError(
            f"target {token!r} is not a class index, and this model's classes have no names"
        )
    for fold in (False, True):
        same = [
            i for i, name in enumerate(class_names)
            if (name.lower() == token.lower() if fold else name == token)
        ]  # fmt: skip
        if len(same) == 1:
            return same[0]
        if len(same) > 1:
            raise _UsageError(
                f"class name {token!r} is ambiguous (classes {', '.join(map(str, same))}): "
                "pass the index"
            )
    close = difflib.get_close_matches(token, list(class_names), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise _UsageError(f"no class named {token!r}{hint}")


def _class_label(index: int, class_names: Sequence[str] | None) -> str:
    return class_names[index] if class_names is not None else f"class {index}"


def _safe(text: str) -> str:
    """A method or layer name as a file-name part."""
    return "".join(c if c.isalnum() or c in "._" else "-" for c in text)


def _figure_paths(out: Path, images: list[Path], rows: int) -> Any:
    """``(image, class) -> figure path``: ``out`` itself for a single row, else
    ``<out stem>_<image stem>_<class><suffix>`` beside it (the image's number is prefixed where
    two images share a stem)."""
    stems = [p.stem for p in images]
    clash = len(set(stems)) < len(stems)

    def path(image: int, target: int) -> Path:
        if rows == 1:
            return out
        stem = f"{image:04d}_{stems[image]}" if clash else stems[image]
        return out.with_name(f"{out.stem}_{_safe(stem)}_{target}{out.suffix}")

    return path


def _save_figure(figure: Any, path: Path, fmt: str, provenance: dict[str, Any], dpi: int) -> None:
    from backsal.provenance import atomic_path, figure_metadata

    metadata = figure_metadata(provenance, fmt) if fmt in ("png", "pdf") else None
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)


def _explain(args: argparse.Namespace) -> int:
    # Everything that can be checked without computing anything is checked first.
    out = Path(args.out)
    fmt = _figure_suffix(out)
    if args.save_maps is not None:
        from backsal.mapfiles import check_maps_path

        _checked("--save-maps", check_maps_path, args.save_maps)
    for name, value, low in (
        ("--batch-size", args.batch_size, 1), ("--topk", args.topk, 1), ("--dpi", args.dpi, 10)
    ):  # fmt: skip
        if value is not None and value < low:
            raise _UsageError(f"{name} must be at least {low}, not {value}")
    if not 0.0 <= args.alpha <= 1.0:
        raise _UsageError(f"--alpha must lie in [0, 1], not {args.alpha}")
    import matplotlib

    if args.cmap not in matplotlib.colormaps:
        close = difflib.get_close_matches(args.cmap, list(matplotlib.colormaps), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise _UsageError(f"unknown colour map {args.cmap!r}{hint}")
    images = [*args.inputs, *(args.image or [])]
    if not images:
        raise _UsageError("give at least one image, folder or glob pattern")

    from backsal._engine import Plan
    from backsal.data.files import find_images, image_size
    from backsal.meta import Meta
    from backsal.methods import get_method

    paths = find_images(images)
    sizes = [image_size(p) for p in paths]  # headers only: unreadable files fail before any work
    for name in args.methods:
        _checked("--methods", get_method, name)
    meta = _checked("--meta-lr", Meta, lr=args.meta_lr) if args.meta_lr is not None else None
    device = _device(args.device)

    loaded = _load(args)
    if args.layers is None:  # default: every block output (backsal.models.block_layers)
        from backsal.models.blocks import block_layers

        args.layers = _checked("--layers", block_layers, loaded.model)
    seed: Seed = args.seed or loaded.seed
    listing = f"`backsal layers {shlex.quote(args.model)}` lists the model's layers and which can be probed."
    _checked(
        "--layers", Plan.build, loaded.model, args.methods, args.layers, seed, None,
        loaded.contrast_layer, None, then=listing,
    )  # fmt: skip
    targets = list(dict.fromkeys(_resolve_target(t, loaded.class_names) for t in args.target or []))
    return _run(args, out, fmt, paths, sizes, loaded, seed, targets, meta, device)


def _batches(
    paths: list[Path], sizes: list[tuple[int, int]], loaded: LoadedModel, batch_size: int
) -> list[list[int]]:
    """Image indices grouped by model input size, at most ``batch_size`` per batch."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, (height, width) in enumerate(sizes):
        groups.setdefault(loaded.preprocess.output_size(height, width), []).append(index)
    return [
        group[start : start + batch_size]
        for group in groups.values()
        for start in range(0, len(group), batch_size)
    ]


def _provenance(
    args: argparse.Namespace, paths: list[Path], loaded: LoadedModel, seed: str
) -> dict[str, Any]:
    from backsal.provenance import collect, file_checksum

    settings = {
        "model": args.model,
        "source": loaded.source,
        "preprocess": loaded.preprocess.describe(),
        "methods": list(args.methods),
        "layers": list(args.layers),
        "seed": seed,
        "targets": list(args.target or []),
        "topk": args.topk,
        "meta_lr": args.meta_lr,
        "upsampling": {"mode": "bilinear", "align_corners": False, "to": "image size"},
    }
    checksums = dict(loaded.checksums)
    checksums.update({f"image:{p}": file_checksum(p) for p in paths})
    return collect(settings, checksums, {}, {"settings": settings})


def _run(
    args: argparse.Namespace,
    out: Path,
    fmt: str,
    paths: list[Path],
    sizes: list[tuple[int, int]],
    loaded: LoadedModel,
    seed: Seed,
    targets: list[int],
    meta: Any,
    device: torch.device,
) -> int:
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    import backsal
    from backsal import viz
    from backsal.data.files import read_image
    from backsal.mapfiles import MapRow, save_maps

    model = loaded.model.to(device)
    names = loaded.class_names
    provenance = _provenance(args, paths, loaded, seed)
    saved: list[MapRow] = []
    written: list[Path] = []
    progress = tqdm(total=len(paths), unit="image", disable=None, file=sys.stderr)
    figure_paths = _figure_paths(out, paths, len(paths) * (len(targets) or args.topk or 1))
    for batch in _batches(paths, sizes, loaded, args.batch_size):
        originals = [read_image(paths[i]) for i in batch]
        x = torch.stack([loaded.preprocess(image) for image in originals]).to(device)
        with torch.no_grad():
            scores = loaded.probabilities(model(x))
        classes = scores.shape[1]
        if targets:
            stray = [t for t in targets if t >= classes]
            if stray:
                raise _UsageError(
                    f"target {stray[0]} is out of range: the model has {classes} classes"
                )
            chosen = torch.tensor(targets, device=device).expand(len(batch), -1)
        else:
            chosen = scores.topk(min(args.topk or 1, classes), dim=1).indices
        for position, index in enumerate(batch):
            ranked = scores[position].topk(min(max(3, chosen.shape[1]), classes))
            listed = ", ".join(
                f"{_class_label(c, names)} {p:.1%}"
                for p, c in zip(ranked.values.tolist(), ranked.indices.tolist(), strict=True)
            )
            tqdm.write(f"{paths[index]}: {listed}", file=sys.stdout)  # above the progress bar
        per_image = chosen.shape[1]
        image_index = torch.arange(len(batch), device=device).repeat_interleave(per_image)
        row_targets = chosen.reshape(-1)
        # The rows of one image share its forward (the engine's image_index).
        maps = backsal.saliency(
            model, x, row_targets, args.methods, args.layers, seed=seed,
            image_index=image_index, contrast_layer=loaded.contrast_layer, meta=meta,
        )  # fmt: skip
        top1 = scores.argmax(dim=1).tolist()
        for row, (position, target) in enumerate(
            zip(image_index.tolist(), row_targets.tolist(), strict=True)
        ):
            index = batch[position]
            image = originals[position]
            height, width = image.shape[-2:]
            row_maps = {
                method: {
                    layer: F.interpolate(
                        per_layer[layer][row : row + 1].float(),
                        size=(height, width),
                        mode="bilinear",
                        align_corners=False,
                    )[0, 0].cpu()  # fmt: skip
                    for layer in args.layers
                }
                for method, per_layer in maps.items()
            }
            probability = float(scores[position, target])
            label = f"{_class_label(target, names)} ({probability:.1%})"
            title = f"{args.model}: {label}"
            if target != top1[position]:
                best = top1[position]
                title += f"; predicted {_class_label(best, names)} ({scores[position, best]:.1%})"
            title = f"{paths[index].name} · {title}"
            figure_path = figure_paths(index, target)
            if args.split:
                for method, per_layer in row_maps.items():
                    for layer, saliency in per_layer.items():
                        figure = viz.overlay(image, saliency, alpha=args.alpha, cmap=args.cmap,
                                             title=f"{method} @ {layer}\n{paths[index].name} · {label}")  # fmt: skip
                        split_path = figure_path.with_name(
                            f"{figure_path.stem}_{_safe(method)}_{_safe(layer)}{figure_path.suffix}"
                        )
                        _save_figure(figure, split_path, fmt, provenance, args.dpi)
                        written.append(split_path)
            else:
                figure = viz.grid(row_maps, image, methods=args.methods, layers=args.layers,
                                  alpha=args.alpha, cmap=args.cmap, title=title)  # fmt: skip
                _save_figure(figure, figure_path, fmt, provenance, args.dpi)
                written.append(figure_path)
            if args.save_maps is not None:
                saved.append(MapRow(str(paths[index]), index, target,
                                    names[target] if names else None, probability, row_maps))  # fmt: skip
        progress.update(len(batch))
    progress.close()
    print(f"wrote {len(written)} figure{'s' if len(written) != 1 else ''}: "
          f"{written[0] if len(written) == 1 else out.parent / (out.stem + '_*' + out.suffix)}")  # fmt: skip
    if args.save_maps is not None:
        save_maps(args.save_maps, saved, args.methods, args.layers, provenance)
        print(f"wrote {args.save_maps}")
    return 0


# --------------------------------------------------------------------------------------------
# Parser and entry point
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="backsal", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.add_parser("methods", help="list the saliency methods").set_defaults(run=_methods)
    layers = commands.add_parser(
        "layers", help="list the layer names of a model: blocks, layouts, what can be probed"
    )
    layers.add_argument("model", help="registry name, torchvision classifier or module:function")
    layers.set_defaults(run=_layers, weights="none")
    explain = commands.add_parser(
        "explain",
        help="draw maps of methods at layers over images",
        description="Saliency maps of methods at layers over images, one figure per (image, "
        "class). Models: a registry name, any torchvision classifier, or module:function.",
    )
    explain.add_argument("inputs", nargs="*", help="image files, folders or glob patterns")
    explain.add_argument("--image", action="extend", nargs="+", help="more images (as INPUTS)")
    explain.add_argument("--model", required=True,
                         help="registry name, torchvision classifier name, or module:function")  # fmt: skip
    explain.add_argument(
        "--weights", default=None,
        help="torchvision weights: DEFAULT, an enum name (e.g. IMAGENET1K_V2) or none "
        "(default: DEFAULT, or none with --checkpoint)",
    )  # fmt: skip
    explain.add_argument("--checkpoint", help="a state dict file to load into the model")
    explain.add_argument("--num-classes", type=int,
                         help="classes of a torchvision model built for --checkpoint")  # fmt: skip
    explain.add_argument("--random-weights", action="store_true", help="same as --weights none")
    explain.add_argument("--methods", nargs="+", default=_DEFAULT_METHODS,
                         help="saliency methods (see `backsal methods`)")  # fmt: skip
    explain.add_argument("--layers", nargs="+", default=None,
                         help="layers (see `backsal layers MODEL`; default: every block output); "
                              "'input' is the image")  # fmt: skip
    targets = explain.add_mutually_exclusive_group()
    targets.add_argument("--target", nargs="+",
                         help="classes to explain, as indices or names (default: the top-1)")  # fmt: skip
    targets.add_argument("--topk", type=int, help="explain the K most probable classes")
    explain.add_argument("--seed", choices=("logit", "pointing"),
                         help="backward seed (default: the model's)")  # fmt: skip
    explain.add_argument("--meta-lr", type=float, help="meta-saliency with this learning rate")
    explain.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    explain.add_argument("--batch-size", type=int, default=16, help="images per batch")
    explain.add_argument("--out", default="saliency.png",
                         help="figure path (several images or classes: <stem>_<image>_<class>)")  # fmt: skip
    explain.add_argument("--split", action="store_true",
                         help="one figure per (method, layer) instead of a grid")  # fmt: skip
    explain.add_argument("--save-maps", help="also save the raw maps: .npz or .pt")
    explain.add_argument("--alpha", type=float, default=0.6, help="opacity of the maps")
    explain.add_argument("--cmap", default="inferno", help="matplotlib colour map")
    explain.add_argument("--dpi", type=int, default=150, help="resolution of raster figures")
    explain.set_defaults(run=_explain)
    for sub in (layers, explain):
        sub.add_argument("--resources", default="resources", help="where registry weights go")
        sub.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return parser


#: The longest error line shown whole; a longer report is cut to what failed and what to do.
_LINE = 300


def _one_line(report: str, debug: bool) -> str:
    """A user error's report as one line. A long report of several lines (every mismatching
    key, every attempt, every valid name) keeps its first line, which says what failed, and its
    last, which says what to do, where that is short; ``--debug`` prints the whole report with
    the traceback. A report of one line is shown whole, however long: its end is often the
    part to act on (the path to copy a file to)."""
    lines = [line.strip() for line in report.strip().splitlines() if line.strip()]
    message = " ".join(lines)
    if len(message) <= _LINE or len(lines) == 1:
        return message
    tail = f" … {lines[-1]}" if len(lines[-1]) <= _LINE else ""
    return lines[0] + tail + ("" if debug else " (--debug: all of it)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for a user's mistake)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in arguments
    try:
        args = _parser().parse_args(arguments)
        return int(args.run(args))
    except _user_errors() as error:
        if debug:
            traceback.print_exc()
        print(f"backsal: error: {_one_line(str(error), debug) or type(error).__name__}",
              file=sys.stderr)  # fmt: skip
        return 2


if __name__ == "__main__":
    sys.exit(main())
