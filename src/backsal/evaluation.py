"""The evaluation schema: the names every producer and consumer of results agrees on.

The workflow's jobs (:mod:`backsal.experiments`) write per-query records and evaluation tables,
the report (:mod:`backsal.report`) renders them, and the Snakemake rules declare the files the
report writes. All three import their names from here, so that a column, a subset, the centre
baseline or an output file name is spelled once:

* :data:`SUBSETS` — the evaluated subsets of the pointing game (docs/methods.md §6);
* :data:`CENTER`, :data:`NO_LAYER` — the centre baseline's method and layer labels;
* :data:`COLUMNS` — the columns of the evaluation table of each kind (:data:`KINDS`);
* :data:`SENSITIVITY_RECORD_COLUMNS`, :data:`P_TRUE` — the per-image class-sensitivity records;
* :data:`OUTPUTS`, :func:`stem_of`, :func:`stems` — the file names (stems) of the tables and figures,
  with :data:`TABLE_SUFFIXES` and :data:`FIGURE_SUFFIXES`;
* :class:`Examples` — the example maps kept for the qualitative figures, and their ``.npz`` file.

It lives at the top of the package, not in ``experiments`` or ``report``, because both sides
(and the workflow, at parse time) need it and neither should import the other to get it. It
imports numpy only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "CENTER",
    "COLUMNS",
    "COUNT_COLUMNS",
    "FIGURE_SUFFIXES",
    "KINDS",
    "NO_LAYER",
    "OUTPUTS",
    "P_TRUE",
    "RUN_COLUMNS",
    "SENSITIVITY_RECORD_COLUMNS",
    "SUBSETS",
    "TABLE_SUFFIXES",
    "Examples",
    "read_examples",
    "stem_of",
    "stems",
]

#: The subsets of the pointing game: every query, and the "difficult" queries only.
SUBSETS: tuple[str, ...] = ("all", "difficult")
#: Method name of the centre baseline (the point ``(W/2, H/2)``).
CENTER = "center"
#: Layer label of rows that have no layer (the centre baseline).
NO_LAYER = "n/a"

#: The kinds of evaluation table, one per stage that scores maps.
KINDS: tuple[str, ...] = ("pointing", "combination", "meta", "sensitivity", "sanity", "deletion")
#: The run a row belongs to; the first columns of every evaluation table.
RUN_COLUMNS: tuple[str, ...] = ("dataset", "model", "arch")
#: A pointing accuracy with its counts (one row per subset).
COUNT_COLUMNS: tuple[str, ...] = ("subset", "accuracy", "hits", "queries")
#: The columns of each kind's evaluation table, in order.
COLUMNS: dict[str, tuple[str, ...]] = {
    "pointing": (*RUN_COLUMNS, "method", "rule", "phase1", "phase2", "layer", *COUNT_COLUMNS),
    "combination": (
        *RUN_COLUMNS,
        "method",
        "strategy",
        "mode",
        "weights_from",
        *COUNT_COLUMNS,
    ),  # fmt: skip
    "meta": (*RUN_COLUMNS, "method", "layer", "lr", *COUNT_COLUMNS),
    "sensitivity": (*RUN_COLUMNS, "method", "layer", "lr", "mean", "std", "n", "undefined"),
    # the model-randomisation sanity check (docs/methods.md §12): depth 1 is the top block
    "sanity": (
        *RUN_COLUMNS,
        "randomisation",
        "depth",
        "block",
        "method",
        "layer",
        "spearman_mean",
        "spearman_std",
        "ssim_mean",
        "ssim_std",
        "n",
        "undefined",
    ),
    # deletion and insertion (docs/methods.md §13); curve: the mean probability per step
    "deletion": (
        *RUN_COLUMNS,
        "mode",
        "baseline",
        "method",
        "layer",
        "auc_mean",
        "auc_std",
        "n",
        "curve",
    ),
}

#: Column of the sensitivity records: the model's probability of the image's ground-truth class
#: (its most probable one where it has several; docs/methods.md §7).
P_TRUE = "p_true"
#: The per-image class-sensitivity records, one row per image × method × layer × lr (``lr = 0``:
#: plain maps); ``record`` indexes the image in its dataset.
SENSITIVITY_RECORD_COLUMNS: tuple[str, ...] = (
    "record",
    "class_max",
    "class_min",
    P_TRUE,
    "method",
    "layer",
    "lr",
    "rho",
)

#: Every table is written with these suffixes (one stem, three files).
TABLE_SUFFIXES: tuple[str, ...] = (".csv", ".md", ".tex")
#: Every figure is written with these suffixes.
FIGURE_SUFFIXES: tuple[str, ...] = (".pdf", ".png")

#: Output stems (file names without suffix) of the report, by output. A per-run output goes to
#: ``<tables or figures>/<dataset>/<model>/<stem>``; ``{subset}`` and ``{index}`` are filled in.
OUTPUTS: dict[str, str] = {
    "pointing_table": "pointing_{subset}",
    "combination_table": "combination_{subset}",
    "sensitivity_table": "sensitivity",
    "meta_pointing_table": "meta_pointing_{subset}",
    "meta_sensitivity_table": "meta_sensitivity",
    "reference_table": "reference_comparison",
    "pointing_layers_figure": "pointing_layers",
    "grid_figure": "grid_{subset}",
    "sensitivity_figure": "sensitivity_layers",
    "meta_figure": "meta",
    "qualitative_figure": "qualitative_{index:03d}",
    "sanity_table": "sanity",
    "sanity_figure": "sanity_depth",
    "deletion_table": "deletion",
    "deletion_figure": "deletion_curves",
    "phase_grid_figure": "phase_grid_{layer}_{index:03d}",
    "combined_figure": "combined_{index:03d}",
    "meta_maps_figure": "meta_maps_{layer}_{index:03d}",
    "normgrad_identity_table": "normgrad_identity",
    "sensitivity_scatter_figure": "sensitivity_scatter",
}


def stem_of(
    output: str, *, subset: str | None = None, index: int | None = None, layer: str | None = None
) -> str:
    """The file stem of ``output`` (a key of :data:`OUTPUTS`), e.g.
    ``stem_of("pointing_table", subset="all") == "pointing_all"``.

    Raises:
        KeyError: Unknown output, or a field the stem needs is missing.
    """
    if output not in OUTPUTS:
        raise KeyError(f"unknown output {output!r}; outputs are {sorted(OUTPUTS)}")
    pattern = OUTPUTS[output]
    needed = set(re.findall(r"{(\w+)", pattern))
    given = {"subset": subset, "index": index, "layer": layer}
    missing = sorted(name for name in needed if given[name] is None)
    if missing:
        raise KeyError(f"output {output!r} ({pattern}) needs {missing}")
    return pattern.format(**{name: given[name] for name in needed})


def stems(output: str, subsets: Sequence[str] = SUBSETS) -> list[str]:
    """Every stem of ``output``: one per subset where the stem has a ``{subset}``."""
    if "{subset}" in OUTPUTS.get(output, ""):
        return [stem_of(output, subset=subset) for subset in subsets]
    return [stem_of(output)]


# --------------------------------------------------------------------------------------------
# Example maps for the qualitative figures
# --------------------------------------------------------------------------------------------

# npz keys are file names inside a zip: a grid method's "/" is stored as "-" (no method, phase or
# layer name contains "-" or "__", so the reversal is unambiguous).
_MAP_KEY = re.compile(r"^map__(?P<method>.+?)__(?P<layer>.+)$")
_ARRAYS = ("images", "targets", "class_names", "image_ids")


@dataclass(frozen=True)
class Examples:
    """Example images and their saliency maps, as the workflow keeps them for figures.

    Attributes:
        images: ``uint8 [K, 3, H, W]`` RGB images at display size.
        targets: ``int64 [K]`` class index of each image's map (its first query).
        class_names: The dataset's class names.
        image_ids: ``[K]`` image identifiers.
        maps: ``maps[method][layer]`` is a ``[K, h, w]`` array (any resolution; drawn over the
            whole image).
    """

    images: np.ndarray
    targets: np.ndarray
    class_names: list[str]
    image_ids: list[str]
    maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"examples: images must be [K, 3, H, W], got {self.images.shape}")
        count = self.images.shape[0]
        if self.targets.shape != (count,) or len(self.image_ids) != count:
            raise ValueError(
                f"examples: {count} images but targets {self.targets.shape}, "
                f"{len(self.image_ids)} image ids"
            )
        if count and (self.targets.min() < 0 or self.targets.max() >= len(self.class_names)):
            raise ValueError(
                f"examples: targets must index the {len(self.class_names)} class names"
            )
        for method, per_layer in self.maps.items():
            for layer, array in per_layer.items():
                if array.ndim != 3 or array.shape[0] != count:
                    raise ValueError(
                        f"examples: map {method}@{layer} must be [{count}, h, w], got {array.shape}"
                    )

    def save(self, handle: BinaryIO) -> None:
        """Write the examples as a compressed ``.npz`` to an open binary file.

        A file object, not a path: given a path, numpy appends ``.npz`` to it, which would break
        writing to a temporary name first.
        """
        arrays: dict[str, Any] = {
            "images": self.images,
            "targets": self.targets,
            "image_ids": np.array(self.image_ids),
            "class_names": np.array(self.class_names),
        }
        for method, per_layer in self.maps.items():
            for layer, values in per_layer.items():
                arrays[f"map__{method.replace('/', '-')}__{layer}"] = values
        np.savez_compressed(handle, **arrays)


def read_examples(path: str | os.PathLike[str]) -> Examples:
    """Read an examples ``.npz`` written by :meth:`Examples.save`."""
    with np.load(path, allow_pickle=False) as archive:
        missing = [k for k in _ARRAYS if k not in archive.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}")
        maps: dict[str, dict[str, np.ndarray]] = {}
        for key in archive.files:
            match = _MAP_KEY.match(key)
            if match is None:
                continue
            method = match["method"].replace("-", "/")
            maps.setdefault(method, {})[match["layer"]] = np.asarray(archive[key])
        if not maps:
            raise ValueError(f"{path}: no 'map__<method>__<layer>' arrays")
        return Examples(
            images=np.asarray(archive["images"]),
            targets=np.asarray(archive["targets"]).astype(np.int64),
            class_names=[str(c) for c in archive["class_names"]],
            image_ids=[str(i) for i in archive["image_ids"]],
            maps=maps,
        )
