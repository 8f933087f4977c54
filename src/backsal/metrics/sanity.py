"""Model-randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS
2018), batched on the device (docs/methods.md §12).

A saliency method that explains the model must change when the model's weights are destroyed.
For blocks ``b_1 … b_n`` of the network (given from input to output) and every randomisation
step ``j = 1 … n``:

* ``cascading``: the top ``j`` blocks ``b_{n-j+1} … b_n`` are randomised, the rest is trained
  (randomisation from the top layer down);
* ``independent``: block ``b_{n-j+1}`` alone is randomised.

For every method × layer the maps of the trained model ``S`` and of the randomised one ``S'`` are
compared per row by Spearman's rank correlation (:func:`backsal.metrics.sensitivity.spearman`) and
by the structural similarity (:func:`ssim`) of their min–max normalised versions. Values near 1
mean the map ignores the randomised weights: the method fails the check.

Randomisation (:func:`randomised_parameters`): every parameter of a randomised block is replaced
by i.i.d. Gaussian values with the trained tensor's own mean and standard deviation, so each layer
keeps its scale and the activations stay in range, but all learned structure is gone. The draw
of a parameter depends on ``seed`` and its name only (a CPU generator, so any device gives the
same weights), so a block is randomised identically in the cascading and the independent run.
Buffers (BatchNorm running statistics) stay as trained.

The user's model is never written to nor copied: a step's weights are a dict of new tensors for
the randomised parameters only, passed to ``torch.func.functional_call``; every method at every
layer of a step comes from one saliency pass per backward rule over all rows.
:func:`model_randomisations` runs both schemes from one pass of the trained model, and the
step they share (the top block alone) once.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from .._engine import Plan, Rows, Seed, check_devices, engine_mode
from .sensitivity import rank_maps, spearman

__all__ = [
    "RANDOMISATIONS",
    "SSIM_CONSTANTS",
    "SSIM_SIGMA",
    "SSIM_WINDOW",
    "SSIMStatistics",
    "SanityResult",
    "model_randomisation",
    "model_randomisations",
    "randomisation_blocks",
    "randomisation_steps",
    "randomised_parameters",
    "ssim",
    "ssim_statistics",
]

Randomisation = Literal["cascading", "independent"]
#: The two randomisation schemes of Adebayo et al. 2018.
RANDOMISATIONS: tuple[Randomisation, ...] = ("cascading", "independent")

#: SSIM window side (Wang et al. 2004): 11×11 Gaussian weights of σ = 1.5, normalised to sum 1.
SSIM_WINDOW = 11
#: σ of the SSIM window, in pixels.
SSIM_SIGMA = 1.5
#: ``(K1, K2)`` of SSIM: ``C1 = (K1·L)²``, ``C2 = (K2·L)²`` with data range ``L = 1``.
SSIM_CONSTANTS = (0.01, 0.03)


# --------------------------------------------------------------------------- SSIM


def _ssim_window(device: torch.device, dtype: torch.dtype) -> Tensor:
    radius = SSIM_WINDOW // 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return (weights / weights.sum()).to(device=device, dtype=dtype)


def _band(window: Tensor, size: int) -> Tensor:
    """``[size, size - len(window) + 1]``: column ``j`` holds ``window`` at rows ``j …``."""
    taps = window.numel()
    band = window.new_zeros(size, size - taps + 1)
    for offset in range(taps):  # taps (11) diagonals, not a loop over pixels
        band.diagonal(-offset).fill_(window[offset])
    return band


def _normalise(maps: Tensor) -> Tensor:
    """Min–max to ``[0, 1]`` per row; a constant map becomes 0 (it has no structure)."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / torch.where(span > 0, span, 1), 0)


@dataclass(frozen=True)
class SSIMStatistics:
    """One side of :func:`ssim` computed once (:func:`ssim_statistics`), for the comparison of
    the same maps with several others: the model-randomisation check compares the trained maps
    with a randomised batch at every step.

    Attributes:
        maps: ``float64 [B, H, W]``: the maps as compared (min–max normalised unless asked not).
        mean: ``float64 [B, H − 10, W − 10]``: their Gaussian-weighted mean at each window.
        square: The weighted mean of their squares at each window.
    """

    maps: Tensor
    mean: Tensor
    square: Tensor

    @property
    def shape(self) -> torch.Size:
        """``[B, H, W]``."""
        return self.maps.shape


def _valid_blur(stack: Tensor) -> Tensor:
    """The SSIM window's weighted mean at every "valid" position of ``stack [..., H, W]``.

    The separable filter as two products with banded matrices: float64 convolutions with one
    channel take a slow path on the CPU (30x slower measured at 64²), matmuls do not.
    """
    window = _ssim_window(stack.device, stack.dtype)
    rows, columns = _band(window, stack.shape[-2]), _band(window, stack.shape[-1])
    return rows.T @ stack @ columns


def ssim_statistics(maps: Tensor, normalise: bool = True) -> SSIMStatistics:
    """The per-map part of :func:`ssim` of ``maps [B, H, W]`` or ``[B, 1, H, W]`` (float64)."""
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3:
        raise ValueError(f"maps must be [B, H, W] or [B, 1, H, W], got {tuple(maps.shape)}")
    if min(maps.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs maps of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels (its window), got "
            f"{tuple(maps.shape[-2:])}: upsample the maps first (e.g. saliency(size=...))."
        )
    maps = maps.to(torch.float64)
    if normalise:
        maps = _normalise(maps)
    mean, square = _valid_blur(torch.stack([maps, maps * maps], dim=1)).unbind(1)
    return SSIMStatistics(maps, mean, square)


def ssim(a: Tensor | SSIMStatistics, b: Tensor | SSIMStatistics, normalise: bool = True) -> Tensor:
    """Structural similarity of each pair of maps (Wang et al., IEEE TIP 2004), on their device.

    Per window position ``u`` (Gaussian weights ``w``, :data:`SSIM_WINDOW`, :data:`SSIM_SIGMA`)::

        SSIM(u) = (2 μa μb + C1)(2 σab + C2) / ((μa² + μb² + C1)(σa² + σb² + C2))

    with weighted means μ, variances σ² = E_w[a²] − μ² and covariance σab = E_w[ab] − μa μb,
    ``C1 = (0.01)²``, ``C2 = (0.03)²`` for data range 1; the result is the mean over the window
    positions that lie wholly inside the map (no padding), as in Wang et al.'s reference code.

    Args:
        a: ``[B, H, W]`` or ``[B, 1, H, W]`` maps, ``H, W ≥ 11``, or their
            :func:`ssim_statistics` when the same maps are compared with several others.
        b: Same shape as ``a`` (or its :func:`ssim_statistics`).
        normalise: Min–max normalise each map to ``[0, 1]`` first (a constant map becomes 0), so
            that maps of any scale are compared on data range 1. Statistics passed in were
            normalised (or not) when they were computed.

    Returns:
        ``float64 [B]``: computed in float64, since ``E[a²] − μ²`` cancels badly in float32
        next to ``C2``.
    """
    if isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape != b.shape:
        raise ValueError(f"maps must have equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    side_a = a if isinstance(a, SSIMStatistics) else ssim_statistics(a, normalise)
    side_b = b if isinstance(b, SSIMStatistics) else ssim_statistics(b, normalise)
    if side_a.shape != side_b.shape:
        raise ValueError(
            f"maps must have equal shapes, got {tuple(side_a.shape)} and {tuple(side_b.shape)}"
        )
    k1, k2 = SSIM_CONSTANTS
    c1, c2 = k1**2, k2**2
    mu_a, mu_b = side_a.mean, side_b.mean
    ab = _valid_blur(side_a.maps * side_b.maps)
    var_a, var_b, cov = side_a.square - mu_a**2, side_b.square - mu_b**2, ab - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    denominator = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (numerator / denominator).mean(dim=(-2, -1))


# --------------------------------------------------------------------------- randomisation


def _block_parameters(model: nn.Module, blocks: Sequence[str]) -> dict[str, list[str]]:
    """The parameter names of each block (a module name), validated."""
    if not blocks:
        raise ValueError("No block to randomise: give module names from model.named_modules().")
    if len(set(blocks)) != len(blocks):
        raise ValueError(f"Blocks are listed twice: {list(blocks)}.")
    modules = dict(model.named_modules())
    names = [name for name, _ in model.named_parameters()]
    owned: dict[str, list[str]] = {}
    for block in blocks:
        if block not in modules or block == "":
            raise ValueError(
                f"{block!r} is not a module of the model; blocks are names from "
                f"model.named_modules(), e.g. {', '.join(n for n in list(modules)[1:6])}."
            )
        owned[block] = [n for n in names if n.startswith(block + ".")]
        if not owned[block]:
            raise ValueError(f"Block {block!r} has no parameter to randomise.")
    seen: dict[str, str] = {}
    for block, params in owned.items():
        for name in params:
            if name in seen:
                raise ValueError(
                    f"Blocks {seen[name]!r} and {block!r} overlap (both hold {name!r}): give "
                    "disjoint modules."
                )
            seen[name] = block
    return owned


def _generator_seed(seed: int, name: str) -> int:
    # crc32 is stable across processes and platforms (unlike hash()).
    return (int(seed) * 0x9E3779B1 + zlib.crc32(name.encode())) % 2**63


def randomised_parameters(
    model: nn.Module, blocks: Sequence[str], seed: int = 0
) -> dict[str, Tensor]:
    """New tensors for every parameter of ``blocks``: Gaussian with each tensor's mean and std.

    ``θ'_i ~ N(mean(θ), std(θ)²)`` i.i.d. (population std), drawn in float64 on the CPU by a
    generator seeded from ``seed`` and the parameter's name, then cast to the parameter's dtype and
    device. The model is not touched.

    Args:
        model: The trained model.
        blocks: Module names whose parameters (all of their own, recursively) are randomised.
        seed: Base seed of the draws.

    Returns:
        ``{parameter name: tensor}`` for ``torch.func.functional_call``.
    """
    owned = _block_parameters(model, blocks)
    params = dict(model.named_parameters())
    result = {}
    for names in owned.values():
        for name in names:
            trained = params[name].detach()
            reference = trained.to(torch.float64)
            generator = torch.Generator().manual_seed(_generator_seed(seed, name))
            noise = torch.randn(trained.shape, generator=generator, dtype=torch.float64)
            drawn = reference.mean().cpu() + reference.std(correction=0).cpu() * noise
            result[name] = drawn.to(device=trained.device, dtype=trained.dtype)
    return result


_NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
)


def randomisation_blocks(model: nn.Module) -> list[str]:
    """Default blocks, from input to output: the model's top-level modules that hold
    parameters, with the members of a top-level ``nn.Sequential`` taken one by one.

    A normalisation layer on its own (``bn1`` of a ResNet stem, VGG-BN's BatchNorms) is no block:
    it is an affine rescaling of the layer before it and stays trained; inside a block (a ResNet
    bottleneck) it is randomised with the block. For torchvision's ResNet50 this gives ``conv1``,
    every bottleneck (``layer1.0 … layer4.2``) and ``fc``; for VGG16 every convolution and
    linear layer.
    """
    blocks = []
    for name, child in model.named_children():
        members = child.named_children() if isinstance(child, nn.Sequential) else [("", child)]
        for sub, module in members:
            if isinstance(module, _NORMS) or not any(True for _ in module.parameters()):
                continue
            blocks.append(f"{name}.{sub}" if sub else name)
    if not blocks:
        raise ValueError("The model has no parameterised module to randomise.")
    return blocks


def randomisation_steps(
    blocks: Sequence[str], mode: Randomisation
) -> list[tuple[str, tuple[str, ...]]]:
    """The steps of a run, top block first: ``(block randomised at the step, all randomised)``.

    Args:
        blocks: Block names from input to output.
        mode: ``"cascading"`` (the top ``j`` blocks at step ``j``) or ``"independent"``.
    """
    if mode not in RANDOMISATIONS:
        raise ValueError(f"Unknown randomisation {mode!r}; use one of {RANDOMISATIONS}.")
    top_down = list(reversed(blocks))
    if mode == "cascading":
        return [(block, tuple(top_down[: j + 1])) for j, block in enumerate(top_down)]
    return [(block, (block,)) for block in top_down]


# --------------------------------------------------------------------------- the check


@dataclass(frozen=True)
class SanityResult:
    """Similarity of the trained and the randomised maps, per step, method, layer and row.

    Attributes:
        mode: ``"cascading"`` or ``"independent"``.
        blocks: Per step (top block first), the block randomised at that step.
        spearman: ``{method: {layer: float64 [steps, B]}}``, NaN where a map is constant.
        ssim: ``{method: {layer: [steps, B]}}``.
        passes: Saliency passes run (one per backward rule for the trained model and per step;
            see :func:`model_randomisations` for passes shared between results).
    """

    mode: str
    blocks: tuple[str, ...]
    spearman: dict[str, dict[str, Tensor]]
    ssim: dict[str, dict[str, Tensor]]
    passes: int = field(default=0)

    def records(self) -> list[dict[str, object]]:
        """One flat record per (step, method, layer, row), for a table."""
        out: list[dict[str, object]] = []
        for method, by_layer in self.spearman.items():
            for layer, rho in by_layer.items():
                rho_host = rho.cpu().tolist()
                ssim_host = self.ssim[method][layer].cpu().tolist()
                for step, block in enumerate(self.blocks):
                    for row, (r, s) in enumerate(zip(rho_host[step], ssim_host[step], strict=True)):
                        out.append(
                            {
                                "randomisation": self.mode,
                                "depth": step + 1,
                                "block": block,
                                "method": method,
                                "layer": layer,
                                "row": row,
                                "spearman": r,
                                "ssim": s,
                            }
                        )
        return out


def model_randomisation(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | Sequence[int],
    methods: Sequence[str],
    layers: Sequence[str],
    blocks: Sequence[str],
    mode: Randomisation = "cascading",
    *,
    seed: Seed = "logit",
    size: tuple[int, int] | None = None,
    randomisation_seed: int = 0,
    contrast_layer: str | None = None,
    classifier_layer: str | None = None,
    method_layers: Mapping[str, Sequence[str]] | None = None,
) -> SanityResult:
    """Run the model-randomisation sanity check for every method at every layer.

    Args:
        model: The trained classifier; it runs in eval mode during the call and is not written
            to or copied.
        images: ``[B, 3, H, W]``, one row per target.
        targets: ``[B]`` class per row (Adebayo et al. explain the trained model's prediction).
        methods: Registry names (:func:`backsal.methods.available_methods`).
        layers: Layers to probe, as for :func:`backsal.saliency`.
        blocks: Modules to randomise, from input to output (e.g. ResNet ``layer1 … layer4, fc``).
        mode: ``"cascading"`` or ``"independent"`` (see the module docstring).
        seed: Backward seed, as for :func:`backsal.saliency`.
        size: ``(H, W)`` the maps are compared at (default: the images' size; SSIM needs ≥ 11).
        randomisation_seed: Seed of :func:`randomised_parameters`.
        contrast_layer: As for :func:`backsal.saliency`.
        classifier_layer: As for :func:`backsal.saliency`.
        method_layers: As for :func:`backsal.saliency`.

    Returns:
        A :class:`SanityResult`, steps top block first.
    """
    return model_randomisations(
        model, images, targets, methods, layers, blocks, (mode,), seed=seed, size=size,
        randomisation_seed=randomisation_seed, contrast_layer=contrast_layer,
        classifier_layer=classifier_layer, method_layers=method_layers,
    )[mode]  # fmt: skip


def model_randomisations(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | Sequence[int],
    methods: Sequence[str],
    layers: Sequence[str],
    blocks: Sequence[str],
    modes: Sequence[Randomisation] = RANDOMISATIONS,
    *,
    seed: Seed = "logit",
    size: tuple[int, int] | None = None,
    randomisation_seed: int = 0,
    contrast_layer: str | None = None,
    classifier_layer: str | None = None,
    method_layers: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, SanityResult]:
    """:func:`model_randomisation` for several randomisations at once, sharing their passes.

    The trained model's maps are computed once for all of them, and a step whose set of
    randomised blocks an earlier step already had (the top block alone is the first step of
    both ``cascading`` and ``independent``) reuses that step's scores: the blocks' draws depend
    on ``randomisation_seed`` and the parameters' names only, so its maps would be the same.
    The arguments are :func:`model_randomisation`'s, with ``modes`` for ``mode``.

    Returns:
        ``{mode: SanityResult}`` in the order of ``modes``; a result's ``passes`` counts the
        passes it did not share with an earlier result.
    """
    unique = list(dict.fromkeys(modes))
    if not unique:
        raise ValueError(f"modes=(): give at least one of {RANDOMISATIONS}.")
    steps_of = {mode: randomisation_steps(blocks, mode) for mode in unique}
    owned = _block_parameters(model, blocks)  # validated before any pass
    size = size if size is not None else (int(images.shape[-2]), int(images.shape[-1]))
    if min(size) < SSIM_WINDOW:
        raise ValueError(
            f"size={size}: the maps are compared by SSIM, whose window is {SSIM_WINDOW} pixels; "
            "pass a larger size."
        )
    plan = Plan.build(
        model, methods, layers, seed, size, contrast_layer, classifier_layer, method_layers
    )
    check_devices(model, images)
    rows = Rows.build(images, targets, None, share_forward=False)
    pairs = [(m.name, layer) for m in plan.methods for layer in plan.layers_of[m.name]]
    rules = len(plan.by_rule)
    drawn: dict[str, Tensor] = {}  # a block's draw is reused by every later step that has it
    scored: dict[frozenset[str], tuple[Tensor, Tensor]] = {}  # randomised blocks -> (ρ, SSIM)
    results: dict[str, SanityResult] = {}
    with engine_mode(model):
        trained = _stack(plan.run(rows), pairs)
        # the trained side of every comparison, computed once for every step of every mode
        trained_ranks, trained_ssim = rank_maps(trained), ssim_statistics(trained)
        passes = rules
        for mode in unique:
            rho: list[Tensor] = []
            similarity: list[Tensor] = []
            for _, randomised in steps_of[mode]:
                key = frozenset(randomised)
                if key not in scored:
                    tensors: dict[str, Tensor] = {}
                    for block in randomised:
                        if block not in drawn:
                            drawn.update(randomised_parameters(model, [block], randomisation_seed))
                        tensors.update({n: drawn[n] for n in owned[block]})

                    def forward(x: Tensor, p: dict[str, Tensor] = tensors) -> Tensor:
                        return torch.func.functional_call(model, p, (x,))

                    maps = _stack(plan.run(rows, forward), pairs)
                    with torch.no_grad():
                        scored[key] = (
                            spearman(trained_ranks, maps).view(len(pairs), rows.rows),
                            ssim(trained_ssim, maps).view(len(pairs), rows.rows),
                        )
                    passes += rules
                rho.append(scored[key][0])
                similarity.append(scored[key][1])
            results[mode] = _result(mode, steps_of[mode], pairs, plan, rho, similarity, passes)
            passes = 0
    return results


def _result(
    mode: str,
    steps: list[tuple[str, tuple[str, ...]]],
    pairs: list[tuple[str, str]],
    plan: Plan,
    rho: list[Tensor],
    similarity: list[Tensor],
    passes: int,
) -> SanityResult:
    rho_all, ssim_all = torch.stack(rho, 1), torch.stack(similarity, 1)  # [pairs, steps, B]
    by_rho: dict[str, dict[str, Tensor]] = {m.name: {} for m in plan.methods}
    by_ssim: dict[str, dict[str, Tensor]] = {m.name: {} for m in plan.methods}
    for i, (method, layer) in enumerate(pairs):
        by_rho[method][layer] = rho_all[i]
        by_ssim[method][layer] = ssim_all[i]
    return SanityResult(mode, tuple(b for b, _ in steps), by_rho, by_ssim, passes)


def _stack(maps: dict[str, dict[str, Tensor]], pairs: list[tuple[str, str]]) -> Tensor:
    """``[pairs·B, H, W]``: every (method, layer)'s maps, detached, in ``pairs`` order."""
    return torch.cat([maps[m][layer].detach()[:, 0] for m, layer in pairs])
