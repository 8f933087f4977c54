"""Slow references for the engine's tests: explicit per-location virtual layers and outer products.

Every phase-1 option is realised literally: a virtual layer with its own parameters *per sample
and per location* is inserted after the probed tensor (a forward hook replaces the module's
output), initialised so that the forward pass is unchanged; autograd on those parameters then
gives each location's contribution ``c_u`` in full (the outer products materialised), and phase
2 is applied to it by brute force. Only for tiny tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PHASE2_BRUTE = {
    "sum": lambda c: c.sum(-1),
    "norm": lambda c: c.square().sum(-1).sqrt(),
    "filter_norm": lambda c: c.clamp_min(0).square().sum(-1).sqrt(),
    "max": lambda c: c.max(-1).values,
    "max_abs": lambda c: c.abs().max(-1).values,
}


def _virtual(phase1: str, x: Tensor) -> tuple[Tensor, Tensor]:
    """(parameters, output) of the virtual identity layer ``phase1`` applied to ``x`` [B,C,H,W]."""
    b, c, h, w = x.shape
    if phase1 == "bias":
        p = torch.zeros_like(x, requires_grad=True)
        return p, x + p
    if phase1 == "scaling":
        p = torch.ones_like(x, requires_grad=True)
        return p, x * p
    if phase1 == "conv1x1":
        eye = torch.eye(c, dtype=x.dtype)
        p = eye.expand(b, h * w, c, c).clone().requires_grad_(True)
        z = torch.einsum("buoi,biu->bou", p, x.flatten(2))
        return p, z.reshape(b, c, h, w)
    patches = F.unfold(x, 3, padding=1)  # [B, 9C, HW], index = channel * 9 + tap
    if phase1 == "conv3x3":
        init = torch.zeros(c, 9 * c, dtype=x.dtype)
        init[torch.arange(c), torch.arange(c) * 9 + 4] = 1
        p = init.expand(b, h * w, c, 9 * c).clone().requires_grad_(True)
        z = torch.einsum("buoi,biu->bou", p, patches)
        return p, z.reshape(b, c, h, w)
    if phase1 == "conv3x3_depthwise":
        init = torch.zeros(c, 9, dtype=x.dtype)
        init[:, 4] = 1
        p = init.expand(b, h * w, c, 9).clone().requires_grad_(True)
        z = torch.einsum("buct,bctu->bcu", p, patches.view(b, c, 9, h * w))
        return p, z.reshape(b, c, h, w)
    raise AssertionError(phase1)


def _per_location_conv(conv: nn.Conv2d, x_in: Tensor) -> tuple[Tensor, Tensor]:
    """The model's conv with one weight copy per sample and output location: ``(params, z)``."""
    padding = conv.padding
    if conv.padding_mode != "zeros":
        x_in = F.pad(x_in, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = 0
    patches = F.unfold(
        x_in, conv.kernel_size, dilation=conv.dilation, padding=padding, stride=conv.stride
    )
    b, _, locations = patches.shape
    groups, c_out = conv.groups, conv.out_channels
    weight = conv.weight.detach().flatten(1)  # [C_out, C_in/g * k * k]
    p = weight.expand(b, locations, *weight.shape).clone().requires_grad_(True)
    per_group = patches.view(b, groups, -1, locations)  # [B, G, C_in/g * k * k, L]
    p_groups = p.view(b, locations, groups, c_out // groups, -1)
    z = torch.einsum("blgoi,bgil->bgol", p_groups, per_group).reshape(b, c_out, locations)
    if conv.bias is not None:
        z = z + conv.bias.detach()[None, :, None]
    return p, z


def contributions(
    model: nn.Module, images: Tensor, targets: Tensor, layer: str, phase1: str
) -> Tensor:
    """Per-location contributions ``[B, H, W, D]`` (D: the flattened contribution) by autograd."""
    model.eval()
    held: dict[str, object] = {}
    if layer == "input":
        p, x = _virtual(phase1, images)
        held["size"] = images.shape[-2:]
        out = model(x)
    else:
        module = dict(model.named_modules())[layer]

        def hook(mod: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
            held["size"] = output.shape[-2:]
            if phase1 == "real_conv":
                p, z = _per_location_conv(mod, inputs[0])
                held["p"] = p
                return z.view_as(output)
            p, z = _virtual(phase1, output)
            held["p"] = p
            return z

        handle = module.register_forward_hook(hook)
        try:
            out = model(images)
        finally:
            handle.remove()
        p = held["p"]  # type: ignore[assignment]
    score = out[torch.arange(len(targets)), targets].sum()
    (grad,) = torch.autograd.grad(score, p)
    b = images.shape[0]
    h, w = held["size"]  # type: ignore[misc]
    if phase1 in ("bias", "scaling"):  # [B, C, H, W] -> [B, H, W, C]
        return grad.permute(0, 2, 3, 1)
    return grad.reshape(b, h, w, -1)


def brute_force_map(
    model: nn.Module, images: Tensor, targets: Tensor, layer: str, phase1: str, phase2: str
) -> Tensor:
    """The map of ``phase1/phase2`` at ``layer``, ``[B, 1, H, W]``, the slow way."""
    c = contributions(model, images, targets, layer, phase1)
    return PHASE2_BRUTE[phase2](c).unsqueeze(1)


def grad_cam_reference(model: nn.Module, images: Tensor, targets: Tensor, layer: str) -> Tensor:
    """Grad-CAM by its definition: ReLU of the gradient-mean-weighted sum of activations."""
    g = contributions(model, images, targets, layer, "bias").permute(0, 3, 1, 2)  # [B, C, H, W]
    module = dict(model.named_modules())[layer]
    captured: dict[str, Tensor] = {}
    # clone: the in-place ReLU after conv1 would overwrite a plain reference
    handle = module.register_forward_hook(
        lambda m, i, o: captured.__setitem__("x", o.detach().clone())
    )
    try:
        model(images)
    finally:
        handle.remove()
    x = captured["x"]
    weights = g.mean(dim=(2, 3), keepdim=True)
    return torch.relu((x * weights).sum(1, keepdim=True))
