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

from .combine import combination_weights, combine, combine_all, normalize_maps
from .explain import saliency
from .meta import Meta, meta_saliency
from .methods import NAMED_METHODS, PHASE1, PHASE2, RULES, Method, available_methods, get_method

# ``backsal.options`` is the context manager; the module's names import as
# ``from backsal.options import ...``.
from .options import Options, get_options, options, set_options
from .rules import backward_rule

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
