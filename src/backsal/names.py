"""The framework's names as plain data: which saliency methods exist and what each one is, and
the input pseudo-layer.

A method is a backward rule plus an aggregation (phase 1 then phase 2, or a gradient-CAM
weighting); :mod:`backsal.methods` holds the formulas and attaches one to every name resolved
here. This module imports no torch, so the config checks, the evaluation tables and the reports
can name and describe methods and layers without loading it (the workflow's table and figure jobs import no
torch at all).

Accepted names (docs/methods.md §1–§3, §10):

* a named method of the paper's Table 2 (:data:`NAMED_METHODS`) or of the gradient-CAM family
  (:data:`GRADIENT_CAM_METHODS`);
* ``"<phase1>/<phase2>"``: a grid entry under the plain gradient;
* ``"<rule>:<phase1>/<phase2>"``: a grid entry under another backward rule (:data:`RULES`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Final

__all__ = [
    "GRADIENT_CAM_METHODS",
    "INPUT",
    "NAMED_METHODS",
    "PHASE1",
    "PHASE2",
    "RULES",
    "MethodName",
    "available_methods",
    "resolve_method",
]

#: Pseudo layer name for the input image itself: a probe of the model's input.
INPUT: Final = "input"

PHASE1: Final = ("bias", "scaling", "conv1x1", "conv3x3", "conv3x3_depthwise", "real_conv")
PHASE2: Final = ("sum", "norm", "filter_norm", "max", "max_abs")
RULES: Final = ("plain", "guided", "deconvnet", "excitation", "contrastive_excitation")

#: The named methods of the grid: name -> (rule, phase1, phase2, description).
NAMED_METHODS: Final[dict[str, tuple[str, str, str, str]]] = {
    "gradient": ("plain", "bias", "max_abs", "gradient (Simonyan et al. 2014): max_k |g_k|"),
    "gradient_sum": ("plain", "bias", "sum", "gradient summed over channels: Σ_k g_k"),
    "linear_approx": ("plain", "scaling", "sum", "gradient × activation: Σ_k x_k g_k"),
    "norm_grad_selective": (
        "plain",
        "scaling",
        "filter_norm",
        "selective NormGrad: ‖max(x ⊙ g, 0)‖",
    ),
    "norm_grad": ("plain", "conv1x1", "norm", "NormGrad: ‖x_u‖·‖g_u‖"),
    "norm_grad_conv3x3": ("plain", "conv3x3", "norm", "NormGrad, 3×3 virtual conv: ‖P_u(x)‖·‖g_u‖"),
    "norm_grad_proper": (
        "plain",
        "real_conv",
        "norm",
        "NormGrad of the model's conv: ‖P_u(x_in)‖·‖g_out‖",
    ),
    "guided_backprop": ("guided", "bias", "max_abs", "guided backprop (Springenberg et al. 2015)"),
    "guided_backprop_sum": ("guided", "bias", "sum", "guided backprop summed over channels"),
    "deconvnet": ("deconvnet", "bias", "max_abs", "deconvnet (Zeiler & Fergus 2014)"),
    "excitation_backprop": (
        "excitation",
        "bias",
        "sum",
        "excitation backprop, MWP (Zhang et al. 2016)",
    ),
    "contrastive_excitation_backprop": (
        "contrastive_excitation",
        "bias",
        "sum",
        "contrastive excitation backprop, c-MWP (Zhang et al. 2016): max(Σ_k g_k, 0)",
    ),
}

#: Grad-CAM and the gradient-CAM family, pytorch-grad-cam 1.5.7's definitions (docs/methods.md
#: §10): name -> description. All run under the plain gradient and are outside the grid.
_GRADIENT_CAMS: Final[dict[str, str]] = {
    "grad_cam": "Grad-CAM (Selvaraju et al. 2017): max(0, Σ_k x_k ḡ_k)",
    "grad_cam_plus_plus": (
        "Grad-CAM++ (Chattopadhay et al. 2018): max(0, Σ_k w_k x_k), w_k = Σ g⁺ α"
    ),
    "xgrad_cam": "XGrad-CAM (Fu et al. 2020): max(0, Σ_k w_k x_k), w_k = Σ g x / Σ x",
    "layer_cam": "LayerCAM (Jiang et al. 2021): max(0, Σ_k x_k max(g_k, 0))",
    "hires_cam": "HiResCAM (Draelos & Carin 2020): max(0, Σ_k x_k g_k)",
    "grad_cam_elementwise": "element-wise Grad-CAM (pytorch-grad-cam): Σ_k max(x_k g_k, 0)",
}

GRADIENT_CAM_METHODS: Final = tuple(_GRADIENT_CAMS)


@dataclass(frozen=True)
class MethodName:
    """What a method name stands for.

    Attributes:
        name: The name as given.
        rule: Backward rule whose pass provides ``g`` (one of :data:`RULES`).
        phase1: Phase-1 option, or ``None`` for the gradient-CAM family (outside the grid).
        phase2: Phase-2 option, or ``None`` likewise.
        description: One line for listings.
    """

    name: str
    rule: str
    phase1: str | None
    phase2: str | None
    description: str


def _grid(name: str, rule: str, phase1: str, phase2: str, description: str = "") -> MethodName:
    description = description or f"{phase1} contribution, {phase2} aggregation ({rule} rule)"
    return MethodName(name, rule, phase1, phase2, description)


def _build() -> dict[str, MethodName]:
    names = {name: MethodName(name, "plain", None, None, d) for name, d in _GRADIENT_CAMS.items()}
    for name, (rule, phase1, phase2, description) in NAMED_METHODS.items():
        names[name] = _grid(name, rule, phase1, phase2, description)
    for phase1 in PHASE1:
        for phase2 in PHASE2:
            names[f"{phase1}/{phase2}"] = _grid(f"{phase1}/{phase2}", "plain", phase1, phase2)
    return names


#: Every name listed by :func:`available_methods`, in its order.
_NAMES: Final[dict[str, MethodName]] = _build()


def available_methods() -> list[str]:
    """Names in the registry: the gradient-CAM family, the named methods, then the plain-rule
    grid ``phase1/phase2``.

    Any grid entry can also be computed under another rule as ``"<rule>:<phase1>/<phase2>"``.
    """
    return list(_NAMES)


def resolve_method(name: str) -> MethodName:
    """What ``name`` stands for (see the module docstring for the accepted forms).

    Raises:
        ValueError: An unknown name; the message suggests close ones and lists the forms.
    """
    if name in _NAMES:
        return _NAMES[name]
    rule, sep, grid = name.partition(":")
    if sep:
        phase1, _, phase2 = grid.partition("/")
        if rule in RULES and phase1 in PHASE1 and phase2 in PHASE2:
            return _grid(name, rule, phase1, phase2)
    close = difflib.get_close_matches(name, list(_NAMES), n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"Unknown saliency method {name!r}.{hint} Known methods: {', '.join(_NAMES)}; "
        f"any grid entry also as '<rule>:<phase1>/<phase2>' with rule in {', '.join(RULES)}."
    )
