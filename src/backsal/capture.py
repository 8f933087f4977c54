"""Probes: the activations and gradients of named layers, all from one forward and one backward.

A probe is a forward hook on a module. It keeps the module's output ``x`` (and, for
``real_conv``, a snapshot of its input) and hands the rest of the network a *copy* of ``x``: an
in-place operation downstream (``ReLU(inplace=True)`` after a probed conv, ResNet's
``out += identity`` after a probed batch norm) then modifies the copy, never the captured tensor,
and the gradient with respect to ``x`` is still exact. The copy costs one activation per probe,
small next to what autograd keeps for the backward.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from torch import Tensor, nn

__all__ = ["INPUT", "Probe", "ProbeSet", "resolve_layers"]

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


class ProbeSet:
    """Forward hooks on a set of layers; use as a context manager around the forward pass.

    Args:
        model: The model.
        layers: Layer names (``"input"`` excluded: the caller owns the input tensor).
        keep_input: Names whose module input is also kept (detached snapshot).
    """

    def __init__(
        self, model: nn.Module, layers: Sequence[str], keep_input: Iterable[str] = ()
    ) -> None:
        modules = resolve_layers(model, layers)
        keep = set(keep_input)
        self.probes: dict[str, Probe] = {
            name: Probe(name, module, keep_input=name in keep)
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
            probe.order = self._calls
            self._calls += 1
            return output.clone()

        return hook

    def release(self) -> None:
        """Drop the captured tensors."""
        for probe in self.probes.values():
            probe.output = probe.input = None
