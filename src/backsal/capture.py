"""Probes: the activations and gradients of named layers, all from one forward and one backward.

A probe is a forward hook on a module. It keeps the module's output ``x`` (and, for
``real_conv``, a snapshot of its input). An in-place operation downstream would overwrite the
captured values (``ReLU(inplace=True)`` after a probed conv, ResNet's ``out += identity`` after a
probed batch norm), so a probe hands the rest of the network a *copy* of ``x`` where that is
likely: after modules with parameters of their own (convolutions, normalisations, linear layers),
which in-place activations and sums typically follow. Elsewhere (activations, pools, blocks) the
copy would cost a full pass over the activation for nothing, so those probes share the tensor and
check its version counter after the forward: if something did write into it, the caller reruns
the pass with copies for those layers (:attr:`ProbeSet.overwritten`) and remembers it for the
model, so it happens once.

**Layouts** (docs/methods.md §11). Every method reads a probe as a map ``[B, C, H, W]``; a probe
converts what its layer outputs, and the same conversion applies to the gradient, so every
formula is unchanged on the converted tensor:

* ``[B, C, H, W]`` as is; ``[B, C]`` (a fully connected layer) viewed as ``[B, C, 1, 1]``.
* channels last ``[B, H, W, C]`` (Swin's stages, the inside of ConvNeXt's blocks) permuted. A
  4-D output is channels last when the module that wrote it last acts on its last axis: a
  ``LayerNorm`` or ``Linear`` whose feature count is the last axis' size (and not the second's),
  or a ``Permute`` to ``(0, 2, 3, 1)``; a conv, batch norm, pool or ``Permute`` back to
  ``(0, 3, 1, 2)`` says channels first. The deciding module is the last one of these in
  registration order up to the end of the layer's own modules (so an activation or dropout takes
  the layout of what feeds it); where both axes have the feature count the layout is ambiguous
  and the probe asks for a ``reshape``.
* tokens ``[B, T, C]`` (ViT's encoder layers): the last ``h·w`` tokens are the patches, in
  row-major order on the grid ``h × w = (H / p) × (W / p)`` of the image ``H × W`` and the
  model's ``patch_size`` ``p`` (without one, the grid with the image's aspect ratio); the leading
  tokens (class, distillation or register tokens) are dropped.
* anything else, given a ``reshape`` (as pytorch-grad-cam's ``reshape_transform``): a function of
  the layer's output tensor that returns ``[B, C, H, W]``, applied alike to the gradient.

Layers whose output is not a spatial map of the image (MaxViT's window-partitioned tensors
inside its attention layers) are refused with the layer to probe instead.
"""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import torch
from torch import Tensor, nn

from .names import INPUT

__all__ = [
    "INPUT",
    "SHORTCUT_NAMES",
    "Layout",
    "Probe",
    "ProbeMark",
    "ProbeSet",
    "Reshape",
    "feeding_convs",
    "probe_marks",
    "resolve_layers",
]

#: How a probe reads its layer's output (see the module docstring).
Layout = Literal["channels_first", "channels_last", "tokens", "flat", "custom"]
#: A user's conversion of a layer's output to ``[B, C, H, W]``.
Reshape = Callable[[Tensor], Tensor]


def resolve_layers(model: nn.Module, layers: Iterable[str]) -> dict[str, nn.Module | None]:
    """Map layer names to modules (``None`` for ``"input"``); unknown names raise with the list."""
    modules = dict(model.named_modules())
    resolved: dict[str, nn.Module | None] = {}
    for name in layers:
        if not isinstance(name, str):
            raise TypeError(f"Layer names must be strings, got {name!r}.")
        if name == INPUT:
            resolved[name] = None
        elif name in modules and name != "":
            resolved[name] = modules[name]
        else:
            valid = [INPUT, *(n for n in modules if n)]
            close = difflib.get_close_matches(name, valid, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            # first line: what failed (a command line shows it alone); then the whole list
            raise ValueError(
                f"Unknown layer {name!r}.{hint}\nValid layers are 'input' and the names of "
                f"model.named_modules(): {', '.join(valid)}."
            )
    return resolved


@dataclass
class Probe:
    """What one probe captured in the last forward pass."""

    name: str
    module: nn.Module | None
    keep_input: bool = False
    output: Tensor | None = None
    input: Tensor | None = None
    order: int = -1  # position among the probes' first calls, in forward order
    calls: int = 0
    copy: bool = True  # hand the network a copy of the output (see the module docstring)
    version: int = 0  # the output's version counter when captured
    reshape: Reshape | None = None  # the user's conversion to [B, C, H, W]
    layout: Layout = "channels_first"  # of the last captured output
    grid: tuple[int, int] = (0, 0)  # the patch grid of a token layout

    def to_map(self, t: Tensor) -> Tensor:
        """The captured output, or its gradient, as a map ``[B, C, H, W]`` (see the module
        docstring); rows may have been reindexed since capture, the layout is per layer."""
        if self.layout == "custom":
            assert self.reshape is not None
            return _checked_map(self.name, self.reshape(t), "the reshape for it")
        if self.layout == "flat":
            return t[:, :, None, None]
        if self.layout == "channels_last":  # contiguous: the statistics read channel slices
            return t.permute(0, 3, 1, 2).contiguous()
        if self.layout == "tokens":
            h, w = self.grid
            patches = t[:, t.shape[1] - h * w :]  # [B, h·w, C]
            return patches.transpose(1, 2).unflatten(2, (h, w)).contiguous()
        return t


def _checked_map(name: str, t: Any, source: str) -> Tensor:
    if not isinstance(t, Tensor) or t.dim() != 4:
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"Layer {name!r}: {source} returned {shape}; it must return [B, C, H, W].")
    return t


def _leaves_up_to(model: nn.Module, name: str) -> list[nn.Module]:
    """The model's leaf modules in registration order, up to the last one inside ``name``."""
    leaves = [(n, m) for n, m in model.named_modules() if next(m.children(), None) is None]
    end = max(
        (i for i, (n, _) in enumerate(leaves) if n == name or n.startswith(name + ".")),
        default=-1,
    )
    return [m for _, m in leaves[: end + 1]]


def _channels_last(name: str, model: nn.Module, shape: torch.Size) -> bool:
    """Whether a 4-D output of layer ``name`` is ``[B, H, W, C]`` (rule: module docstring).

    The deciding module is sought among the layer's own leaves and then those registered before
    it, so that a layout-neutral module (an activation, a dropout) takes the layout of what
    feeds it (the GELU inside ConvNeXt's block is channels last).
    """
    # torchvision's layout modules, if torchvision is loaded: a model holding one has imported
    # it, so a model without torchvision is not made to import it (1.5 s)
    convnext = sys.modules.get("torchvision.models.convnext")
    misc = sys.modules.get("torchvision.ops.misc")
    permute: tuple[type, ...] = (misc.Permute,) if misc is not None else ()
    channels_first: tuple[type, ...] = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d)
    if convnext is not None:
        channels_first += (convnext.LayerNorm2d,)

    first, last = shape[1], shape[-1]
    for leaf in reversed(_leaves_up_to(model, name)):
        if isinstance(leaf, permute):
            dims: list[int] = list(leaf.dims)  # type: ignore[arg-type]  # Permute's dims
            if dims == [0, 2, 3, 1]:
                return True
            if dims == [0, 3, 1, 2]:
                return False
            continue
        if isinstance(leaf, channels_first):
            return False
        if isinstance(leaf, nn.GroupNorm | nn.InstanceNorm2d | nn.MaxPool2d | nn.AvgPool2d):
            return False
        if isinstance(leaf, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
            return False
        if isinstance(leaf, nn.LayerNorm) and len(leaf.normalized_shape) == 1:
            features = leaf.normalized_shape[0]
        elif isinstance(leaf, nn.Linear):
            features = leaf.out_features
        else:
            continue
        if last == features and first == features:
            raise ValueError(
                f"Layer {name!r} outputs {tuple(shape)}: channels first or last cannot be told "
                "apart (both axes have the feature count). Pass reshape={"
                f"{name!r}: lambda t: t.permute(0, 3, 1, 2)}} for channels last, or "
                "lambda t: t for channels first."
            )
        if last == features:
            return True
        if first == features:
            return False
    return False


def _token_grid(
    name: str, tokens: int, image: tuple[int, int], patch: int | None
) -> tuple[int, int]:
    """The patch grid of ``tokens`` tokens for an image ``H × W`` (module docstring)."""
    height, width = image
    if patch:
        grid = (height // patch, width // patch)
        if grid[0] * grid[1] <= tokens:
            return grid
    else:
        for extra in range(tokens):  # the fewest leading non-patch tokens
            n = tokens - extra
            h = round(math.sqrt(n * height / width)) if width else 0
            if h > 0 and n % h == 0 and abs(h / (n // h) - height / width) < 1e-6:
                return h, n // h
    raise ValueError(
        f"Layer {name!r} outputs {tokens} tokens, which do not hold the patch grid of a "
        f"{height}×{width} image{f' with patch size {patch}' if patch else ''}. Pass "
        "reshape={name: fn} with fn(t) -> [B, C, H, W], as pytorch-grad-cam's reshape_transform."
    )


def _partitioned(model: nn.Module) -> dict[str, str]:
    """Modules whose outputs are window-partitioned, not maps: name -> the layer to probe."""
    # A MaxViT layer exists only once its module is imported: looked up, not imported, so that
    # the engine's many ProbeSets never import torchvision (1.2-1.7 s, torch._dynamo included)
    # for a model that has no torchvision module (the small VGG's jobs).
    maxvit = sys.modules.get("torchvision.models.maxvit")
    layer_class = getattr(maxvit, "PartitionAttentionLayer", None)
    if layer_class is None:
        return {}
    result: dict[str, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, layer_class):
            for sub, _ in module.named_modules():
                if sub:
                    result[f"{name}.{sub}"] = name
    return result


class ProbeSet:
    """Forward hooks on a set of layers; use as a context manager around the forward pass.

    Args:
        model: The model.
        layers: Layer names (``"input"`` excluded: the caller owns the input tensor).
        keep_input: Names whose module input is also kept (detached snapshot).
        copy: Names whose probes hand the network a copy of the output.
        reshape: A conversion of a layer's output to ``[B, C, H, W]`` for every layer, or
            ``{layer: conversion}``; other layers' layouts are detected (module docstring).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        keep_input: Iterable[str] = (),
        copy: Iterable[str] = (),
        reshape: Reshape | Mapping[str, Reshape] | None = None,
    ) -> None:
        modules = resolve_layers(model, layers)
        partitioned = _partitioned(model)
        for name in modules:
            if name in partitioned:
                raise ValueError(
                    f"Layer {name!r} outputs window-partitioned tokens (MaxViT), not a map of the "
                    f"image: probe {partitioned[name]!r}, whose output is [B, C, H, W]."
                )
        if isinstance(reshape, Mapping):
            stray = [name for name in reshape if name not in modules]
            if stray:
                raise ValueError(f"reshape names layers that are not probed: {stray}.")
        keep, forced = set(keep_input), set(copy)
        self.model = model
        self.probes: dict[str, Probe] = {
            name: Probe(
                name,
                module,
                keep_input=name in keep,
                copy=name in forced or any(True for _ in module.parameters(recurse=False)),
                reshape=reshape.get(name) if isinstance(reshape, Mapping) else reshape,
            )
            for name, module in modules.items()
            if module is not None
        }
        patch = getattr(model, "patch_size", None)
        self._patch = patch if isinstance(patch, int) else None
        self._image: tuple[int, int] = (0, 0)
        self._handles: list[Any] = []
        self._calls = 0

    def __enter__(self) -> ProbeSet:
        self._calls = 0
        for probe in self.probes.values():
            probe.output = probe.input = None
            probe.calls, probe.order = 0, -1
            assert probe.module is not None
            self._handles.append(probe.module.register_forward_hook(self._hook(probe)))
        if self.probes:  # the image size, for the patch grid of token layers
            self._handles.append(self.model.register_forward_pre_hook(self._record_image))
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if exc_type is None:
            silent = [p.name for p in self.probes.values() if p.calls == 0]
            if silent:
                raise ValueError(
                    f"Layers {silent} did not run in the forward pass (a module that the model "
                    "calls functionally, like Swin's attention projections, or one used only in "
                    "training, like Inception's auxiliary heads): probe the module that runs them "
                    "(`backsal layers MODEL` lists what can be probed)."
                )

    def _record_image(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        image = inputs[0] if inputs else None
        if isinstance(image, Tensor) and image.dim() == 4:
            self._image = (image.shape[-2], image.shape[-1])

    def _hook(self, probe: Probe):  # noqa: ANN202 - a torch hook
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Tensor:
            probe.calls += 1
            if probe.calls > 1:
                raise RuntimeError(
                    f"Layer {probe.name!r} runs more than once in one forward pass (a module "
                    "reused at several call sites), so its output is ambiguous. Probe a module "
                    "that runs once, e.g. the enclosing block or the layer feeding it."
                )
            self._set_layout(probe, output)
            if probe.keep_input:
                probe.input = inputs[0].detach().clone()
            probe.output = output
            probe.version = output._version
            probe.order = self._calls
            self._calls += 1
            return output.clone() if probe.copy else output

        return hook

    def _set_layout(self, probe: Probe, output: Any) -> None:
        if probe.reshape is not None and isinstance(output, Tensor):
            probe.layout = "custom"
            return
        if not isinstance(output, Tensor) or output.dim() not in (2, 3, 4):
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(
                f"Layer {probe.name!r} outputs {shape}; saliency needs a tensor [B, C, H, W], "
                "[B, H, W, C], tokens [B, T, C] or [B, C]. Probe the enclosing block (e.g. a "
                "transformer layer rather than its attention), or pass reshape={name: fn} with "
                "fn(output) -> [B, C, H, W]."
            )
        assert probe.module is not None
        if output.dim() == 2:
            probe.layout = "flat"
        elif output.dim() == 3:
            probe.layout = "tokens"
            probe.grid = _token_grid(probe.name, output.shape[1], self._image, self._patch)
        elif _channels_last(probe.name, self.model, output.shape):
            probe.layout = "channels_last"
        else:
            probe.layout = "channels_first"

    @property
    def overwritten(self) -> list[str]:
        """Probes whose captured output was modified in place after capture."""
        return [
            p.name
            for p in self.probes.values()
            if p.output is not None and not p.copy and p.output._version != p.version
        ]

    def release(self) -> None:
        """Drop the captured tensors."""
        for probe in self.probes.values():
            probe.output = probe.input = None


#: Module names of shortcut branches, skipped by :func:`feeding_convs` (torchvision's ResNets).
SHORTCUT_NAMES: Final = ("downsample", "shortcut")


def feeding_convs(model: nn.Module, layers: Iterable[str]) -> dict[str, str]:
    """For each layer, the ``nn.Conv2d`` whose output feeds it on the main path.

    That is the last ``Conv2d`` in registration order up to the end of the layer's own
    submodules, ignoring shortcut branches (modules named ``downsample``/``shortcut``): VGG's
    ``features.3`` (a ReLU) → ``features.2``; a ResNet block → its last main-path conv
    (``conv3`` of a Bottleneck). Methods defined on the model's own convolutions
    (``norm_grad_proper``, ``real_conv/*``) are evaluated there "at" a ReLU or a block. ``input``
    and layers with no conv before them are left out.
    """
    order = [name for name, _ in model.named_modules()]
    modules = dict(model.named_modules())
    result: dict[str, str] = {}
    for layer in layers:
        if layer == INPUT or layer not in modules:
            continue
        # the layer's subtree ends at the last module whose name starts with "layer."
        end = max(
            i for i, name in enumerate(order) if name == layer or name.startswith(layer + ".")
        )
        for name in reversed(order[: end + 1]):
            parts = name.split(".")
            if isinstance(modules[name], nn.Conv2d) and not any(p in SHORTCUT_NAMES for p in parts):
                result[layer] = name
                break
    return result


# --------------------------------------------------------------------------------------------
# Which modules can be probed (``backsal layers MODEL``)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeMark:
    """Whether one module can be probed, from one forward pass.

    Attributes:
        name: Module name (``named_modules``).
        kind: The module's class name.
        calls: How often it ran in the forward pass.
        shape: Its output shape (batch included), or ``None`` for a non-tensor or no output.
        layout: How a probe reads it (:data:`Layout`), ``None`` where it cannot be probed.
        reason: Why it cannot be probed (empty where it can).
        instead: What to probe instead (empty where it can be probed).
    """

    name: str
    kind: str
    calls: int
    shape: tuple[int, ...] | None
    layout: Layout | None
    reason: str = ""
    instead: str = ""

    @property
    def probeable(self) -> bool:
        return self.layout is not None


def probe_marks(model: nn.Module, images: Tensor) -> list[ProbeMark]:
    """Run ``images`` through ``model`` once (no gradient, eval mode restored after) and mark
    every module: probeable with its layout, or why not and what to probe instead.

    A module that runs several times in one pass (torchvision's Bottleneck calls one ``relu``
    after each of its batch norms and after the skip sum) has no single output to explain: probe
    its enclosing block, or one of the layers it is called after (listed; their outputs are the
    activation's inputs).
    """
    named = [(name, module) for name, module in model.named_modules() if name]
    calls: dict[str, int] = {name: 0 for name, _ in named}
    outputs: dict[str, Any] = {}
    after: dict[str, list[str]] = {name: [] for name, _ in named}
    finished: list[str] = []

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            calls[name] += 1
            outputs.setdefault(name, output)
            # the last finished module that is not inside this one: what this call follows
            previous = next(
                (n for n in reversed(finished) if n != name and not n.startswith(name + ".")),
                None,
            )
            if previous is not None:
                after[name].append(previous)
            finished.append(name)

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in named]
    flags = [(module, module.training) for module in model.modules()]
    probes = ProbeSet(model, [])
    probes._image = (images.shape[-2], images.shape[-1])
    try:
        model.eval()
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in flags:
            module.training = training
    partitioned = _partitioned(model)
    marks = []
    for name, module in named:
        parent = name.rpartition(".")[0]
        enclose = f"the enclosing module {parent!r}" if parent else "another module"
        output = outputs.get(name)
        shape = tuple(output.shape) if isinstance(output, Tensor) else None
        kind = type(module).__name__
        reason = instead = ""
        layout: Layout | None = None
        if calls[name] == 0:
            reason = "does not run in the forward pass (called functionally, or only in training)"
            instead = enclose
        elif calls[name] > 1:
            reason = f"runs {calls[name]} times in one pass (reused), so its output is ambiguous"
            sites = ", ".join(dict.fromkeys(after[name]))
            instead = f"{enclose}, or a layer it is called after ({sites})" if sites else enclose
        elif name in partitioned:
            reason = "outputs window-partitioned tokens, not a map of the image"
            instead = repr(partitioned[name])
        elif not isinstance(output, Tensor) or output.dim() not in (2, 3, 4):
            what = f"a {len(shape)}-D tensor" if shape else f"a {type(output).__name__}"
            reason, instead = f"outputs {what}, not a map", enclose
        else:
            probe = Probe(name, module)
            try:
                probes._set_layout(probe, output)
                layout = probe.layout
            except ValueError as error:  # an ambiguous layout or a token count off the grid
                reason, instead = str(error), "the same layer with reshape=..."
        marks.append(ProbeMark(name, kind, calls[name], shape, layout, reason, instead))
    return marks
