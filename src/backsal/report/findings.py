"""The paper's qualitative claims (docs/methods.md §8), tested on our evaluation tables.

Each claim has an explicit criterion, fixed here before any result is seen, and is decided from
the numbers alone: the sentence says "holds" or "does not hold" and quotes the numbers behind the
verdict. A claim that the tables cannot decide (a method, a baseline or enough layers missing)
is reported as "not tested" with the reason, never guessed. Pointing claims use subset ``all``.

Criteria (thresholds are the module constants below):

* **grad_cam_fails_early** — at its first probed layer (the input excluded: the claim is about
  early feature layers), Grad-CAM is no better than the center baseline *and* at least
  :data:`GRAD_CAM_GAP_PP` points below its last layer.
* **<method>_collapses_last** (gradient; guided backprop too when present) — at the model's last
  probed layer the method is at least :data:`COLLAPSE_DROP_PP` points below its best layer.
  Decided for every model; the paper expects it for ResNet50 (no ReLU after ``layer4``).
* **<method>_strong_everywhere** (linear_approx, norm_grad_selective) — at every probed layer
  except the input, the method beats the center baseline and is at or above the median of the
  other named methods at that layer.
* **norm_grad_peaks_intermediate** — over norm_grad's probed layers except the input (at least 3),
  the best interior layer is strictly better than both the first and the last layer.
* **meta_lowers_norm_grad_rho** — at norm_grad's last probed layer, the lowest mean ρ over
  learning rates > 0 is below the plain (lr = 0) mean by more than :data:`RHO_STANDARD_ERRORS`
  standard errors of the difference, ``sqrt(std0²/n0 + std²/n)``, with ``n`` the number of images
  whose ρ is defined (the ``n`` column). Treating the two means as independent overstates the
  error of paired maps, so the test is conservative; picking the best lr is a selection that it
  does not correct for.
* **combining_trades_resolution** — for each method of the combination table, its ``uniform``
  ``sum`` combination is compared with the single layers it combines (``combination_layers``,
  shallow → deep): the combined map keeps the finest layer's spatial resolution (it is a sum of
  maps upsampled from every layer), so the trade holds for a method when the combination is more
  distinctive than that finest layer, by at least :data:`TRADE_GAIN_PP` points of pointing
  accuracy, and not more distinctive than the best single layer (at most that layer's accuracy).
  The claim holds for a model when it holds for more than half of its methods.
* **weakly_class_sensitive** — a method is weakly class sensitive when the mean ρ of its plain
  maps (lr = 0), averaged over its layers (the input included), is at least
  :data:`WEAK_RHO`; the claim holds when more than half of the methods are.
* **sanity_guided_backprop_ignores_weights** (Adebayo et al. 2018) — at the full cascading
  randomisation (every block randomised), the mean ρ between trained and randomised maps at the
  input layer (or, without an input row, the mean over layers) is at least
  :data:`SANITY_RHO` for ``guided_backprop`` (its maps stay correlated: it fails the check) and
  below it for ``gradient`` (it passes). The sentence lists every method's ρ (at the input with
  its standard error, ``std / sqrt(n)`` over the queries whose ρ is defined) and which of them
  stay correlated; the errors say how far a verdict is from moving, they do not decide it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..evaluation import CENTER, NO_LAYER
from ..provenance import validate_provenance, write_json, write_markdown
from ._common import (
    LayerOrder,
    is_grid_method,
    iter_models,
    layers_for,
    require_columns,
    suffixed,
)

__all__ = [
    "COLLAPSE_DROP_PP",
    "GRAD_CAM_GAP_PP",
    "RHO_STANDARD_ERRORS",
    "SANITY_RHO",
    "TRADE_GAIN_PP",
    "WEAK_RHO",
    "Finding",
    "describe_findings",
    "write_findings",
]

GRAD_CAM_GAP_PP = 5.0
COLLAPSE_DROP_PP = 10.0
RHO_STANDARD_ERRORS = 2.0
TRADE_GAIN_PP = 5.0
WEAK_RHO = 0.5
SANITY_RHO = 0.5
_SUBSET = "all"
# Differences of fractions carry rounding error (100 * (0.85 - 0.75) = 9.999…): thresholds are
# compared with this slack so that a difference equal to a threshold counts as reaching it.
_EPS = 1e-9
_NOT_A_LAYER = (NO_LAYER,)


@dataclass(frozen=True)
class Finding:
    """One claim checked on one model.

    Attributes:
        claim: Identifier of the claim (e.g. ``"grad_cam_fails_early"``).
        dataset: Dataset of the evaluation ("" when the table was absent).
        model: Model of the evaluation ("" when the table was absent).
        holds: True / False from the criterion; None when the tables cannot decide it.
        sentence: The finding as a sentence with its numbers and verdict (also ``str(finding)``).
        criterion: The rule that decided ``holds``.
        numbers: The numbers the verdict rests on (percentages for accuracies, ρ as is).
    """

    claim: str
    dataset: str
    model: str
    holds: bool | None
    sentence: str
    criterion: str
    numbers: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """``"holds"``, ``"does not hold"`` or ``"not tested"``."""
        if self.holds is None:
            return "not tested"
        return "holds" if self.holds else "does not hold"

    def __str__(self) -> str:
        return self.sentence


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _verdict(holds: bool) -> str:
    return "holds" if holds else "does not hold"


def _not_tested(
    claim: str, dataset: str, model: str, text: str, criterion: str, why: str
) -> Finding:
    subject = f"{dataset}/{model}: " if dataset or model else ""
    return Finding(claim, dataset, model, None, f"{subject}{text} — not tested: {why}.", criterion)


class _Pointing:
    """Accuracies of one model (subset all) as ``accuracy(method, layer)`` lookups."""

    def __init__(self, rows: pd.DataFrame, layers: list[str]) -> None:
        self.layers = layers
        per_layer = rows[~rows["layer"].astype(str).isin(_NOT_A_LAYER)]
        self.table = per_layer.pivot_table(
            index="method", columns="layer", values="accuracy", aggfunc="first"
        ).reindex(columns=layers)
        center = rows.loc[rows["method"] == CENTER, "accuracy"]
        self.center = float(center.iloc[0]) if len(center) else math.nan

    def series(self, method: str, drop_input: bool) -> pd.Series:
        """The method's accuracies over the layers where it was evaluated, in layer order."""
        if method not in self.table.index:
            return pd.Series(dtype=float)
        values = self.table.loc[method].dropna().astype(float)
        if drop_input:
            values = values[values.index != "input"]
        return values


def _grad_cam(data: _Pointing, dataset: str, model: str) -> Finding:
    claim, text = "grad_cam_fails_early", "Grad-CAM fails at the first layers"
    criterion = (
        "first probed layer (input excluded) ≤ center baseline and at least "
        f"{GRAD_CAM_GAP_PP:g} pp below the last layer"
    )
    values = data.series("grad_cam", drop_input=True)
    if len(values) < 2:
        return _not_tested(
            claim, dataset, model, text, criterion, "grad_cam has fewer than 2 probed layers"
        )
    if math.isnan(data.center):
        return _not_tested(claim, dataset, model, text, criterion, "no center baseline row")
    first_layer, last_layer = values.index[0], values.index[-1]
    first, last = float(values.iloc[0]), float(values.iloc[-1])
    gap = 100 * (last - first)
    holds = first <= data.center + _EPS and gap >= GRAD_CAM_GAP_PP - _EPS
    sentence = (
        f"{dataset}/{model}: {text} — {_verdict(holds)}: {_pct(first)} at {first_layer} vs "
        f"{_pct(last)} at {last_layer} ({gap:+.1f} pp) and {_pct(data.center)} for the center "
        f"baseline (criterion: {criterion})."
    )
    numbers = {
        "first_layer": first_layer, "first": 100 * first, "last_layer": last_layer,
        "last": 100 * last, "center": 100 * data.center,
    }  # fmt: skip
    return Finding(claim, dataset, model, holds, sentence, criterion, numbers)


def _collapse(data: _Pointing, method: str, dataset: str, model: str, arch: str) -> Finding:
    claim, text = f"{method}_collapses_last", f"{method} collapses at the last layer"
    criterion = f"last probed layer at least {COLLAPSE_DROP_PP:g} pp below the method's best layer"
    values = data.series(method, drop_input=False)
    model_last = data.layers[-1] if data.layers else None
    if len(values) < 2 or model_last not in values.index:
        return _not_tested(
            claim, dataset, model, text, criterion,
            f"{method} not evaluated at the last layer {model_last} and one other",
        )  # fmt: skip
    last = float(values[model_last])
    best_layer = str(values.idxmax())
    best = float(values.max())
    drop = 100 * (best - last)
    holds = drop >= COLLAPSE_DROP_PP - _EPS
    center = "" if math.isnan(data.center) else f"; center baseline {_pct(data.center)}"
    sentence = (
        f"{dataset}/{model} ({arch}): {text} — {_verdict(holds)}: {_pct(last)} at {model_last} "
        f"vs {_pct(best)} at its best layer {best_layer} (drop {drop:.1f} pp{center}; "
        f"criterion: {criterion})."
    )
    numbers = {
        "last_layer": model_last,
        "last": 100 * last,
        "best_layer": best_layer,
        "best": 100 * best,
    }
    return Finding(claim, dataset, model, holds, sentence, criterion, numbers)


def _strong(data: _Pointing, method: str, dataset: str, model: str) -> Finding:
    claim, text = f"{method}_strong_everywhere", f"{method} is strong at every layer"
    criterion = (
        "at every probed layer (input excluded): above the center baseline and at or above the "
        "median of the other named methods"
    )
    values = data.series(method, drop_input=True)
    if values.empty:
        return _not_tested(claim, dataset, model, text, criterion, f"no {method} rows")
    if math.isnan(data.center):
        return _not_tested(claim, dataset, model, text, criterion, "no center baseline row")
    others = [
        m for m in data.table.index
        if m != method and m != CENTER and not is_grid_method(str(m))
    ]  # fmt: skip
    if not others:
        return _not_tested(
            claim, dataset, model, text, criterion, "no other named method to compare"
        )
    failures = []
    for layer, value in values.items():
        median = data.table.loc[others, layer].dropna().median()
        beats_center = value > data.center + _EPS
        above_median = pd.isna(median) or value >= median - _EPS
        if not (beats_center and above_median):
            failures.append(layer)
    holds = not failures
    worst_layer, worst = str(values.idxmin()), float(values.min())
    detail = "" if holds else f"; fails at {', '.join(map(str, failures))}"
    sentence = (
        f"{dataset}/{model}: {text} — {_verdict(holds)}: its lowest accuracy is {_pct(worst)} at "
        f"{worst_layer} vs {_pct(data.center)} for the center baseline, at or above the other "
        f"named methods' median at {len(values) - len(failures)} of {len(values)} layers"
        f"{detail} (criterion: {criterion})."
    )
    numbers = {
        "min_layer": worst_layer,
        "min": 100 * worst,
        "center": 100 * data.center,
        "failing_layers": failures,
    }
    return Finding(claim, dataset, model, holds, sentence, criterion, numbers)


def _peak(data: _Pointing, dataset: str, model: str) -> Finding:
    claim, text = "norm_grad_peaks_intermediate", "NormGrad peaks at intermediate layers"
    criterion = (
        "best interior layer (input excluded) strictly above both the first and the last layer"
    )
    values = data.series("norm_grad", drop_input=True)
    if len(values) < 3:
        return _not_tested(
            claim, dataset, model, text, criterion, "norm_grad has fewer than 3 probed layers"
        )
    interior = values.iloc[1:-1]
    peak_layer, peak = str(interior.idxmax()), float(interior.max())
    first, last = float(values.iloc[0]), float(values.iloc[-1])
    holds = peak > first + _EPS and peak > last + _EPS
    sentence = (
        f"{dataset}/{model}: {text} — {_verdict(holds)}: {_pct(peak)} at {peak_layer} vs "
        f"{_pct(first)} at {values.index[0]} (first) and {_pct(last)} at {values.index[-1]} "
        f"(last) (criterion: {criterion})."
    )
    numbers = {
        "peak_layer": peak_layer,
        "peak": 100 * peak,
        "first": 100 * first,
        "last": 100 * last,
    }
    return Finding(claim, dataset, model, holds, sentence, criterion, numbers)


def _meta_rho(
    rows: pd.DataFrame,
    meta: pd.DataFrame | None,
    layer_order: LayerOrder,
    dataset: str,
    model: str,
    arch: str,
) -> Finding:
    claim = "meta_lowers_norm_grad_rho"
    text = "meta-saliency lowers NormGrad's class correlation at the last layer"
    criterion = (
        f"lowest mean ρ over lr > 0 below the lr = 0 mean by more than {RHO_STANDARD_ERRORS:g} "
        "standard errors of the difference"
    )
    norm_grad = rows[rows["method"] == "norm_grad"]
    layers = layers_for(
        layer_order, norm_grad["layer"].astype(str).tolist(), model, arch, "findings"
    )
    layers = [layer for layer in layers if layer != "input"]
    if not layers:
        return _not_tested(claim, dataset, model, text, criterion, "no norm_grad sensitivity rows")
    layer = layers[-1]
    at_layer = norm_grad[norm_grad["layer"].astype(str) == layer]
    plain = at_layer[at_layer["lr"] == 0].dropna(subset=["mean"])
    stepped = at_layer[at_layer["lr"] > 0].dropna(subset=["mean"])
    if plain.empty or stepped.empty:
        return _not_tested(
            claim,
            dataset,
            model,
            text,
            criterion,
            f"norm_grad at {layer} lacks lr = 0 or lr > 0 rows",
        )
    base = plain.iloc[0]
    best = stepped.loc[stepped["mean"].astype(float).idxmin()]
    variance = 0.0
    for row in (base, best):
        if pd.isna(row["std"]) or pd.isna(row["n"]) or float(row["n"]) <= 0:
            return _not_tested(claim, dataset, model, text, criterion, "std or n missing")
        variance += float(row["std"]) ** 2 / float(row["n"])
    error = math.sqrt(variance)
    lowered = float(base["mean"]) - float(best["mean"])
    holds = lowered > RHO_STANDARD_ERRORS * error
    pointing_note = ""
    if meta is not None:
        same = meta[
            (meta["dataset"] == dataset) & (meta["model"] == model) & (meta["method"] == "norm_grad")
            & (meta["layer"].astype(str) == layer) & (meta["subset"] == _SUBSET)
        ]  # fmt: skip
        plain_acc = same.loc[same["lr"] == 0, "accuracy"]
        best_acc = same.loc[same["lr"] == float(best["lr"]), "accuracy"]
        if len(plain_acc) and len(best_acc):
            pointing_note = (
                f"; pointing accuracy there {_pct(float(plain_acc.iloc[0]))} → "
                f"{_pct(float(best_acc.iloc[0]))}"
            )
    sentence = (
        f"{dataset}/{model}: {text} — {_verdict(holds)}: ρ {float(base['mean']):.3f} ± "
        f"{float(base['std']):.3f} at lr 0 ({int(base['undefined'])} undefined) vs "
        f"{float(best['mean']):.3f} ± {float(best['std']):.3f} at lr {float(best['lr']):g} "
        f"({int(best['undefined'])} undefined) at {layer}; lowered by {lowered:.3f}, standard "
        f"error {error:.3f}{pointing_note} (criterion: {criterion})."
    )
    numbers = {
        "layer": layer, "rho_plain": float(base["mean"]), "rho_meta": float(best["mean"]),
        "lr": float(best["lr"]), "standard_error": error,
        "undefined_plain": int(base["undefined"]), "undefined_meta": int(best["undefined"]),
    }  # fmt: skip
    return Finding(claim, dataset, model, holds, sentence, criterion, numbers)


def _trade(
    pointing: pd.DataFrame,
    combination: pd.DataFrame,
    combined_layers: Sequence[str],
    dataset: str,
    model: str,
) -> Finding:
    claim = "combining_trades_resolution"
    text = "combining layers trades spatial resolution for distinctiveness"
    criterion = (
        f"uniform sum combination at least {TRADE_GAIN_PP:g} pp above the finest combined layer "
        "and at most the best combined layer, for more than half of the methods"
    )
    rows = combination[
        (combination["strategy"] == "uniform") & (combination["mode"] == "sum")
        & (combination["subset"] == _SUBSET)
    ]  # fmt: skip
    single = pointing[pointing["subset"] == _SUBSET]
    if rows.empty or not combined_layers:
        return _not_tested(claim, dataset, model, text, criterion, "no uniform sum combination")
    verdicts, parts, numbers = [], [], {}
    finest = combined_layers[0]
    for method, group in rows.groupby("method", sort=True):
        part = single[single["method"] == method]
        accuracies = part.set_index(part["layer"].astype(str))["accuracy"]
        accuracies = accuracies.reindex(list(combined_layers)).astype(float)
        if accuracies.isna().any():
            continue
        combined = float(group["accuracy"].iloc[0])
        best_layer, best = str(accuracies.idxmax()), float(accuracies.max())
        fine = float(accuracies[finest])
        holds = 100 * (combined - fine) >= TRADE_GAIN_PP - _EPS and combined <= best + _EPS
        verdicts.append(holds)
        parts.append(
            f"{method} {_pct(combined)} combined vs {_pct(fine)} at {finest} and "
            f"{_pct(best)} at {best_layer} ({'yes' if holds else 'no'})"
        )
        numbers[str(method)] = {
            "combined": 100 * combined, "finest": 100 * fine, "best": 100 * best,
            "best_layer": best_layer, "holds": holds,
        }  # fmt: skip
    if not verdicts:
        return _not_tested(
            claim, dataset, model, text, criterion,
            f"no combined method has single-layer rows at all of {list(combined_layers)}",
        )  # fmt: skip
    holds = sum(verdicts) > len(verdicts) / 2
    sentence = (
        f"{dataset}/{model}: {text} — {_verdict(holds)} for {sum(verdicts)} of {len(verdicts)} "
        f"methods: {'; '.join(parts)} (criterion: {criterion})."
    )
    return Finding(claim, dataset, model, holds, sentence, criterion, numbers)


def _weakly_sensitive(rows: pd.DataFrame, dataset: str, model: str) -> Finding:
    claim, text = "weakly_class_sensitive", "most methods are only weakly class-sensitive"
    criterion = (
        f"mean ρ of the plain maps over the method's layers ≥ {WEAK_RHO:g}, for more than half "
        "of the methods"
    )
    plain = rows[rows["lr"] == 0].dropna(subset=["mean"])
    if plain.empty:
        return _not_tested(claim, dataset, model, text, criterion, "no plain (lr = 0) ρ rows")
    per_method = plain.groupby("method", observed=True, sort=True)["mean"].mean().astype(float)
    weak = per_method[per_method >= WEAK_RHO - _EPS]
    holds = len(weak) > len(per_method) / 2
    listed = ", ".join(f"{m} {v:.2f}" for m, v in per_method.items())
    undefined = int(rows.loc[rows["lr"] == 0, "undefined"].sum())
    sentence = (
        f"{dataset}/{model}: {text} — {_verdict(holds)}: {len(weak)} of {len(per_method)} "
        f"methods have mean ρ ≥ {WEAK_RHO:g} ({listed}; {undefined} undefined ρ left out) "
        f"(criterion: {criterion})."
    )
    numbers = {"rho": {str(m): float(v) for m, v in per_method.items()}, "undefined": undefined}
    return Finding(claim, dataset, model, holds, sentence, criterion, numbers)


def _sanity(rows: pd.DataFrame, dataset: str, model: str) -> Finding:
    claim = "sanity_guided_backprop_ignores_weights"
    text = "guided backprop's maps survive the randomisation of the weights, the gradient's do not"
    criterion = (
        f"with every block randomised (cascading), ρ(trained, randomised) ≥ {SANITY_RHO:g} for "
        f"guided_backprop and < {SANITY_RHO:g} for gradient, at the input layer (else the mean "
        "over layers)"
    )
    cascading = rows[rows["randomisation"] == "cascading"]
    if cascading.empty:
        return _not_tested(claim, dataset, model, text, criterion, "no cascading rows")
    full = cascading[cascading["depth"] == cascading["depth"].max()]
    at_input = full[full["layer"].astype(str) == "input"]
    source, where = (at_input, "input") if not at_input.empty else (full, "mean over layers")
    per_method = source.groupby("method", observed=True, sort=True)["spearman_mean"].mean()
    stay = [str(m) for m, v in per_method.items() if v >= SANITY_RHO - _EPS]
    errors = _sanity_errors(source) if where == "input" else {}
    listed = ", ".join(
        f"{m} {v:.2f}" + (f" ± {errors[str(m)]:.2f}" if str(m) in errors else "")
        for m, v in per_method.items()
    )
    # the sentence's "at ...": where the ρ are read and, with their errors, the sample
    at = (
        f"{where}, mean ± standard error over {int(source['n'].max())} queries" if errors else where
    )
    numbers = {"rho": {str(m): float(v) for m, v in per_method.items()}, "where": where,
               "standard_error": errors, "stay_correlated": stay}  # fmt: skip
    if "guided_backprop" not in per_method or "gradient" not in per_method:
        why = "guided_backprop or gradient missing from the sanity table"
        found = _not_tested(claim, dataset, model, text, criterion, why)
        sentence = f"{found.sentence[:-1]}; ρ ({at}): {listed}."
        return Finding(claim, dataset, model, None, sentence, criterion, numbers)
    holds = (
        per_method["guided_backprop"] >= SANITY_RHO - _EPS and per_method["gradient"] < SANITY_RHO
    )
    sentence = (
        f"{dataset}/{model}: {text} — {_verdict(bool(holds))}: ρ(trained, fully randomised) at "
        f"{at}: {listed}; staying correlated (≥ {SANITY_RHO:g}, failing the check): "
        f"{', '.join(stay) or 'none'} (criterion: {criterion})."
    )
    return Finding(claim, dataset, model, bool(holds), sentence, criterion, numbers)


def _sanity_errors(rows: pd.DataFrame) -> dict[str, float]:
    """Standard error of each method's mean ρ, ``std / sqrt(defined)``, from one row per method
    (the input layer at the full cascade); empty without the ``spearman_std`` and ``n`` columns."""
    if not {"spearman_std", "n"} <= set(rows.columns):
        return {}
    errors = {}
    for _, row in rows.iterrows():
        defined = float(row["n"]) - float(row.get("undefined", 0) or 0)
        if defined > 0 and not pd.isna(row["spearman_std"]):
            errors[str(row["method"])] = float(row["spearman_std"]) / math.sqrt(defined)
    return errors


def describe_findings(
    pointing: pd.DataFrame | None,
    sensitivity: pd.DataFrame | None,
    meta: pd.DataFrame | None,
    layer_order: LayerOrder,
    *,
    combination: pd.DataFrame | None = None,
    combination_layers: Mapping[str, Sequence[str]] | None = None,
    sanity: pd.DataFrame | None = None,
) -> list[Finding]:
    """Test the paper's qualitative claims on our tables (criteria: see the module docstring).

    Args:
        pointing: Pointing table (plain maps); None skips the pointing claims.
        sensitivity: Sensitivity table with lr = 0 and lr > 0 rows; None skips the meta claim.
        meta: Meta-saliency pointing table; only adds the pointing accuracy at the chosen lr to
            the meta sentence.
        layer_order: Layers shallow → deep (list, or mapping model/arch → list).
        combination: Combination table; with ``pointing`` and ``combination_layers`` it
            decides the layer-combination claim.
        combination_layers: Model (or arch) → the layers its combination combines, shallow →
            deep.
        sanity: Sanity-check table (``COLUMNS['sanity']`` of :mod:`backsal.evaluation`).

    Returns:
        One :class:`Finding` per claim and model; ``str(finding)`` is the sentence and
        ``finding.holds`` the verdict (None: not tested).
    """
    findings: list[Finding] = []
    if pointing is not None:
        require_columns(
            pointing,
            ("dataset", "model", "arch", "method", "layer", "subset", "accuracy"),
            "pointing table",
        )
        subset_rows = pointing[pointing["subset"] == _SUBSET]
        for dataset, model, arch, rows in iter_models(
            subset_rows, f"pointing table (subset {_SUBSET})"
        ):
            layers = layers_for(
                layer_order, rows["layer"].astype(str).tolist(), model, arch, "findings"
            )
            data = _Pointing(rows, layers)
            findings.append(_grad_cam(data, dataset, model))
            findings.append(_collapse(data, "gradient", dataset, model, arch))
            if "guided_backprop" in data.table.index:
                findings.append(_collapse(data, "guided_backprop", dataset, model, arch))
            findings.append(_strong(data, "linear_approx", dataset, model))
            findings.append(_strong(data, "norm_grad_selective", dataset, model))
            findings.append(_peak(data, dataset, model))
    if sensitivity is not None:
        require_columns(
            sensitivity, ("dataset", "model", "arch", "method", "layer", "lr", "mean", "std", "n", "undefined"),
            "sensitivity table",
        )  # fmt: skip
        for dataset, model, arch, rows in iter_models(sensitivity, "sensitivity table"):
            findings.append(_meta_rho(rows, meta, layer_order, dataset, model, arch))
            findings.append(_weakly_sensitive(rows, dataset, model))
    if pointing is not None and combination is not None:
        for dataset, model, arch, rows in iter_models(combination, "combination table"):
            known = combination_layers or {}
            combined = known.get(model, known.get(arch, ()))
            same = pointing[(pointing["dataset"] == dataset) & (pointing["model"] == model)]
            findings.append(_trade(same, rows, list(combined), dataset, model))
    if sanity is not None:
        require_columns(
            sanity, ("dataset", "model", "arch", "randomisation", "depth", "method", "layer",
                     "spearman_mean"),
            "sanity table",
        )  # fmt: skip
        for dataset, model, _, rows in iter_models(sanity, "sanity table"):
            findings.append(_sanity(rows, dataset, model))
    return findings


def write_findings(
    findings: Sequence[Finding], stem: str | Path, provenance: Mapping[str, Any]
) -> list[Path]:
    """Write ``stem.md`` (a bulleted list of the sentences) and ``stem.json`` (every field)."""
    provenance = validate_provenance(provenance)
    stem = Path(stem)
    lines = ["# Findings: the paper's claims tested on our results", ""]
    lines += [f"- **{f.verdict}** — {f.sentence}" for f in findings] or ["- (no findings)"]
    records = [{**asdict(f), "verdict": f.verdict} for f in findings]
    return [
        write_markdown("\n".join(lines) + "\n", suffixed(stem, ".md"), provenance),
        write_json({"findings": records}, suffixed(stem, ".json"), provenance),
    ]
