"""backsal: backpropagation saliency, every method at every layer in one pass per backward rule.

A reproduction of Rebuffi, Fong, Ji, Vedaldi, *There and Back Again: Revisiting Backpropagation
Saliency Methods*, CVPR 2020.

Example::

    import backsal
    maps = backsal.saliency(model, images, targets,
                            methods=["grad_cam", "norm_grad", "linear_approx"],
                            layers=["layer3", "layer4", "input"], size=(224, 224))
    maps["norm_grad"]["layer3"]  # Tensor[B, 1, 224, 224]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_names

# ``backsal.options`` is the context manager; the module's names import as
# ``from backsal.options import ...``. It needs no torch, so it is bound at once: a submodule
# imported later must not rebind the package attribute of the same name.
from .options import Options, get_options, options, set_options

#: The rest of the public API, imported on first use (PEP 562): ``import backsal.provenance`` or
#: ``backsal.evaluation`` (the workflow's table, merge and figure jobs) then costs no torch
#: import. Every name maps to the submodule that defines it.
_LAZY = {
    "combination_weights": ".combination",
    "combine": ".combination",
    "combine_all": ".combination",
    "normalize_maps": ".combination",
    "saliency": ".explain",
    "Meta": ".meta",
    "meta_saliency": ".meta",
    "NAMED_METHODS": ".methods",
    "PHASE1": ".methods",
    "PHASE2": ".methods",
    "RULES": ".methods",
    "Method": ".methods",
    "available_methods": ".methods",
    "get_method": ".methods",
    "backward_rule": ".rules",
}

if TYPE_CHECKING:
    from .combination import combination_weights, combine, combine_all, normalize_maps
    from .explain import saliency
    from .meta import Meta, meta_saliency
    from .methods import NAMED_METHODS, PHASE1, PHASE2, RULES, Method, available_methods, get_method
    from .rules import backward_rule


__getattr__, __dir__ = lazy_names(__name__, _LAZY)

__version__ = "0.1.0"

__all__ = [
    "NAMED_METHODS",
    "PHASE1",
    "PHASE2",
    "RULES",
    "Meta",
    "Method",
    "Options",
    "__version__",
    "available_methods",
    "backward_rule",
    "combination_weights",
    "combine",
    "combine_all",
    "get_method",
    "get_options",
    "meta_saliency",
    "normalize_maps",
    "options",
    "saliency",
    "set_options",
]
