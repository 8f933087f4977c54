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
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from torch import Tensor, nn

__all__ = ["INPUT", "SHORTCUT_NAMES", "Probe", "ProbeSet", "feeding_convs", "resolve_layers"]

#: Pseudo layer name for the input image itself.
INPUT: Final = "input"


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
            raise ValueError(
                f"Unknown layer {name!r}.{hint} Valid layers are 'input' and the names of "
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


class ProbeSet:
    """Forward hooks on a set of layers; use as a context manager around the forward pass.

    Args:
        model: The model.
        layers: Layer names (``"input"`` excluded: the caller owns the input tensor).
        keep_input: Names whose module input is also kept (detached snapshot).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        keep_input: Iterable[str] = (),
        copy: Iterable[str] = (),
    ) -> None:
        modules = resolve_layers(model, layers)
        keep, forced = set(keep_input), set(copy)
        self.probes: dict[str, Probe] = {
            name: Probe(
                name,
                module,
                keep_input=name in keep,
                copy=name in forced or any(True for _ in module.parameters(recurse=False)),
            )
            for name, module in modules.items()
            if module is not None
        }
        self._handles: list[Any] = []
        self._calls = 0

    def __enter__(self) -> ProbeSet:
        self._calls = 0
        for probe in self.probes.values():
            probe.output = probe.input = None
            probe.calls, probe.order = 0, -1
            assert probe.module is not None
            self._handles.append(probe.module.register_forward_hook(self._hook(probe)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, probe: Probe):  # noqa: ANN202 - a torch hook
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Tensor:
            probe.calls += 1
            if probe.calls > 1:
                raise RuntimeError(
                    f"Layer {probe.name!r} runs more than once in one forward pass (a module "
                    "reused at several call sites), so its output is ambiguous. Probe a module "
                    "that runs once, e.g. the enclosing block or the layer feeding it."
                )
            if not isinstance(output, Tensor) or output.dim() not in (2, 4):
                shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
                raise ValueError(
                    f"Layer {probe.name!r} outputs {shape}; saliency needs a tensor [B, C, H, W] "
                    "(or [B, C], viewed as 1×1)."
                )
            if probe.keep_input:
                probe.input = inputs[0].detach().clone()
            probe.output = output
            probe.version = output._version
            probe.order = self._calls
            self._calls += 1
            return output.clone() if probe.copy else output

        return hook

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
