"""The paper's figures of maps, drawn from the workflow's example maps (:class:`.figures.Examples`):

* :func:`plot_phase_grid` — the grid itself for one image at one layer: phase-1 rows × phase-2
  columns (docs/methods.md §2), as the paper's method grid;
* :func:`plot_combined` — combined-layer maps (docs/methods.md §3, uniform weights, sum and
  product) next to the single layers they combine;
* :func:`plot_meta_maps` — meta-saliency maps (docs/methods.md §4) over the learning-rate grid,
  the loss descended (+L) and ascended (−L, ``negate``), as the authors compared them;
* :func:`normgrad_identity` — NormGrad with vs without the virtual identity layer: Spearman ρ
  between ``norm_grad`` (conv1x1/norm at the layer's output) and ``norm_grad_proper`` (the
  network's own conv, real_conv/norm) per layer and image, as the authors measured.

Output names (``out/`` is the ``out_dir`` argument, e.g. ``figures/{dataset}/{model}``):

=================================================  ==========================================
``out/phase_grid_{layer}_{k:03d}``                 :func:`phase_grid_figures`
``out/combined_{k:03d}``                           :func:`combined_figures`
``out/meta_maps_{layer}_{k:03d}``                  :func:`meta_maps_figures`
``out/normgrad_identity``                          :func:`normgrad_identity_table`
=================================================  ==========================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

from ..combination import combine
from ..evaluation import Examples, read_examples, stem_of
from ..experiments.meta_examples import parse_meta_label
from ..methods import PHASE1, PHASE2
from ..metrics.sensitivity import spearman
from ..provenance import validate_provenance
from ..viz import grid
from ._render import RenderedTable, write_table
from .figures import _style, save_figure

__all__ = [
    "combined_figures",
    "meta_maps_figures",
    "normgrad_identity",
    "normgrad_identity_table",
    "phase_grid_figures",
    "plot_combined",
    "plot_meta_maps",
    "plot_phase_grid",
]

#: The two NormGrad variants compared by :func:`normgrad_identity`.
NORMGRAD_PAIR = ("norm_grad", "norm_grad_proper")


def _draw_grid(
    cells: Mapping[str, Mapping[str, np.ndarray | None]],
    image: np.ndarray,
    rows: Sequence[str],
    columns: Sequence[str],
    title: str,
) -> Figure:
    """:func:`backsal.viz.grid` (the CLI's and the qualitative figures' drawing) in the report's
    style: ``cells[row][column]`` over ``image [3, H, W]``, a missing map an empty cell."""
    present = {row: {c: m for c, m in by.items() if m is not None} for row, by in cells.items()}
    with _style(), sns.axes_style("white"):
        return grid(present, image, methods=list(rows), layers=list(columns), title=title, cell=1.4)


def _caption(examples: Examples, index: int) -> str:
    return (
        f"{examples.image_ids[index]}: class {examples.class_names[int(examples.targets[index])]}"
    )


def plot_phase_grid(examples: Examples, index: int, layer: str) -> Figure:
    """Phase-1 rows × phase-2 columns of the plain-rule grid for one image at one layer."""
    if not 0 <= index < examples.images.shape[0]:
        raise IndexError(f"example {index} out of range 0..{examples.images.shape[0] - 1}")
    cells = {
        p1: {
            p2: maps[layer][index]
            for p2 in PHASE2
            if (maps := examples.maps.get(f"{p1}/{p2}")) is not None and layer in maps
        }
        for p1 in PHASE1
    }
    rows = [p1 for p1 in PHASE1 if cells[p1]]
    if not rows:
        raise ValueError(
            f"examples: no grid map ('<phase1>/<phase2>') at layer {layer!r}; add the grid "
            "methods to pointing.methods"
        )
    title = f"{_caption(examples, index)}; layer {layer} (phase 1 × phase 2)"
    return _draw_grid(cells, examples.images[index], rows, list(PHASE2), title)


def phase_grid_figures(
    examples: Examples | str | Path,
    out_dir: str | Path,
    *,
    layers: Sequence[str],
    provenance: Mapping[str, Any],
    indices: Sequence[int] | None = None,
) -> list[Path]:
    """:func:`plot_phase_grid` for each example and layer → ``phase_grid_{layer}_{k:03d}``."""
    provenance = validate_provenance(provenance)
    if not isinstance(examples, Examples):
        examples = read_examples(examples)
    chosen = range(examples.images.shape[0]) if indices is None else list(indices)
    written: list[Path] = []
    for index in chosen:
        for layer in layers:
            figure = plot_phase_grid(examples, index, layer)
            stem = Path(out_dir) / stem_of("phase_grid_figure", layer=layer, index=index)
            written += save_figure(figure, stem, provenance)
    return written


def _combined(examples: Examples, method: str, layers: Sequence[str], mode: str) -> np.ndarray:
    per_layer = {
        layer: torch.from_numpy(np.asarray(examples.maps[method][layer], dtype=np.float32))[:, None]
        for layer in layers
    }
    return combine(per_layer, "uniform", mode)[:, 0].numpy()  # type: ignore[arg-type]


def plot_combined(
    examples: Examples, index: int, *, methods: Sequence[str], layers: Sequence[str]
) -> Figure:
    """Rows = methods; columns = the single layers (shallow → deep), then their uniform
    combination by sum and by product (docs/methods.md §3)."""
    missing = [
        (m, layer) for m in methods for layer in layers if layer not in examples.maps.get(m, {})
    ]
    if missing:
        raise ValueError(f"examples: no maps for {missing}")
    cells: dict[str, dict[str, np.ndarray | None]] = {}
    for method in methods:
        cells[method] = {layer: examples.maps[method][layer][index] for layer in layers}
        for mode in ("sum", "product"):
            cells[method][f"combined ({mode})"] = _combined(examples, method, layers, mode)[index]
    columns = [*layers, "combined (sum)", "combined (product)"]
    title = f"{_caption(examples, index)}; single layers and their uniform combination"
    return _draw_grid(cells, examples.images[index], list(methods), columns, title)


def combined_figures(
    examples: Examples | str | Path,
    out_dir: str | Path,
    *,
    methods: Sequence[str],
    layers: Sequence[str],
    provenance: Mapping[str, Any],
    indices: Sequence[int] | None = None,
) -> list[Path]:
    """:func:`plot_combined` for each example → ``combined_{k:03d}``."""
    provenance = validate_provenance(provenance)
    if not isinstance(examples, Examples):
        examples = read_examples(examples)
    chosen = range(examples.images.shape[0]) if indices is None else list(indices)
    written: list[Path] = []
    for index in chosen:
        figure = plot_combined(examples, index, methods=methods, layers=layers)
        stem = Path(out_dir) / stem_of("combined_figure", index=index)
        written += save_figure(figure, stem, provenance)
    return written


def normgrad_identity(examples: Examples, layers: Sequence[str]) -> pd.DataFrame:
    """Spearman ρ of ``norm_grad`` and ``norm_grad_proper`` maps per layer and example.

    Returns:
        Columns ``layer, image_id, rho`` (NaN where a map is constant).
    """
    plain, proper = (examples.maps.get(name, {}) for name in NORMGRAD_PAIR)
    rows = []
    for layer in layers:
        if layer not in plain or layer not in proper:
            continue
        rho = spearman(
            torch.from_numpy(np.asarray(plain[layer], dtype=np.float64)),
            torch.from_numpy(np.asarray(proper[layer], dtype=np.float64)),
        ).numpy()
        rows += [
            {"layer": layer, "image_id": image, "rho": float(r)}
            for image, r in zip(examples.image_ids, rho, strict=True)
        ]
    if not rows:
        raise ValueError(
            f"examples: no layer of {list(layers)} has both {NORMGRAD_PAIR[0]} and "
            f"{NORMGRAD_PAIR[1]} maps; add both to pointing.methods"
        )
    return pd.DataFrame(rows, columns=["layer", "image_id", "rho"])


def normgrad_identity_table(
    examples: Examples | str | Path,
    out_dir: str | Path,
    *,
    layers: Sequence[str],
    provenance: Mapping[str, Any],
    title: str = "",
) -> list[Path]:
    """:func:`normgrad_identity` as a table, one column per layer: mean ± std of ρ over the
    examples → ``out_dir/normgrad_identity.{csv,md,tex}`` (the CSV holds every image)."""
    provenance = validate_provenance(provenance)
    if not isinstance(examples, Examples):
        examples = read_examples(examples)
    rho = normgrad_identity(examples, layers)
    present = [layer for layer in layers if layer in set(rho["layer"])]
    cells = {}
    for layer in present:
        values = rho.loc[rho["layer"] == layer, "rho"].to_numpy()
        finite = values[np.isfinite(values)]
        cells[layer] = (
            f"{finite.mean():.2f} ± {finite.std():.2f} (n={finite.size})" if finite.size else "–"
        )
    table = RenderedTable(
        display=pd.DataFrame([{"": "ρ(norm_grad, norm_grad_proper)", **cells}]),
        csv=rho,
        caption=(
            f"NormGrad with vs without the virtual identity layer{title}: Spearman ρ between the "
            "maps of norm_grad (the virtual 1×1 identity after the layer) and norm_grad_proper "
            "(the network's own convolution feeding it), mean ± std over the example images."
        ),
        label="normgrad-identity",
        align=["l"] + ["r"] * len(present),
        notes=["Undefined ρ (a constant map) are left out of n."],
    )
    return write_table(table, Path(out_dir) / stem_of("normgrad_identity_table"), provenance)


def plot_meta_maps(
    examples: Examples, index: int, layer: str, *, methods: Sequence[str] | None = None
) -> Figure:
    """Rows = method × (+L, −L), columns = learning rates (0: the plain map) at one layer."""
    parsed = {label: key for label in examples.maps if (key := parse_meta_label(label)) is not None}
    if not parsed:
        raise ValueError("examples: no meta map ('<method>~<sign>~<lr>'); run the meta examples")
    present = list(dict.fromkeys(method for method, _, _ in parsed.values()))
    methods = present if methods is None else list(methods)
    lrs = sorted({lr for _, _, lr in parsed.values()})
    cells: dict[str, dict[str, np.ndarray | None]] = {}
    rows = []
    for method in methods:
        for sign in ("+L", "-L"):
            row = f"{method} {'+L' if sign == '+L' else '−L'}"
            rows.append(row)
            cells[row] = {}
            for lr in lrs:
                wanted = (method, "+L" if lr == 0 else sign, lr)
                label = next((k for k, v in parsed.items() if v == wanted), None)
                if label is not None and layer in examples.maps[label]:
                    cells[row][f"lr {lr:g}"] = examples.maps[label][layer][index]
    columns = [f"lr {lr:g}" for lr in lrs]
    title = f"{_caption(examples, index)}; meta-saliency at {layer}, loss descended (+L) / ascended (−L)"
    return _draw_grid(cells, examples.images[index], rows, columns, title)


def meta_maps_figures(
    examples: Examples | str | Path,
    out_dir: str | Path,
    *,
    layers: Sequence[str],
    provenance: Mapping[str, Any],
    methods: Sequence[str] | None = None,
    indices: Sequence[int] | None = None,
) -> list[Path]:
    """:func:`plot_meta_maps` for each example and layer → ``meta_maps_{layer}_{k:03d}``."""
    provenance = validate_provenance(provenance)
    if not isinstance(examples, Examples):
        examples = read_examples(examples)
    chosen = range(examples.images.shape[0]) if indices is None else list(indices)
    written: list[Path] = []
    for index in chosen:
        for layer in layers:
            figure = plot_meta_maps(examples, index, layer, methods=methods)
            stem = Path(out_dir) / stem_of("meta_maps_figure", layer=layer, index=index)
            written += save_figure(figure, stem, provenance)
    return written
