"""Small synthetic evaluation tables for the report tests (shapes as the workflow writes them)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from backsal.provenance import collect

LAYERS = ["input", "features.3", "features.8", "features.15"]
NAMED = ["gradient", "linear_approx", "norm_grad", "grad_cam"]
GRID = ["bias/sum", "scaling/sum", "real_conv/norm"]
DATASET, MODEL, ARCH = "voc07", "tiny_vgg", "small_vgg"


def provenance() -> dict:
    """A real record, with a command that has '--' (the Markdown comment must survive it)."""
    return collect(
        {"seed": 0, "models": ["tiny_vgg"], "lr": [0.001, 0.01]},
        {"model:tiny_vgg": "sha256:" + "ab" * 32},
        {"saliency": 0},
        {"note": "synthetic (report tests)"},
        command="snakemake --cores 2 report",
        rule="report_tables",
    )


def _rule(method: str) -> tuple[str, str | None, str | None]:
    phases = {
        "gradient": ("bias", "max_abs"),
        "linear_approx": ("scaling", "sum"),
        "norm_grad": ("conv1x1", "norm"),
    }
    if "/" in method:
        phase1, phase2 = method.split("/")
        return "plain", phase1, phase2
    if method == "grad_cam":
        return "plain", None, None
    return "plain", *phases[method]


def pointing_frame(seed: int = 0) -> pd.DataFrame:
    """Accuracies drawn at random; ``real_conv/norm`` is missing at the input (no conv there)."""
    rng = np.random.default_rng(seed)
    rows = []
    for subset in ("all", "difficult"):
        for method in NAMED + GRID:
            for layer in LAYERS:
                if method == "real_conv/norm" and layer == "input":
                    continue
                rule, phase1, phase2 = _rule(method)
                queries = 200
                hits = int(rng.integers(60, 190))
                rows.append(
                    (DATASET, MODEL, ARCH, method, rule, phase1, phase2, layer, subset,
                     hits / queries, hits, queries)
                )  # fmt: skip
        hits = 130 if subset == "all" else 90
        rows.append(
            (DATASET, MODEL, ARCH, "center", None, None, None, "n/a", subset, hits / 200, hits, 200)
        )
    return pd.DataFrame(
        rows,
        columns=["dataset", "model", "arch", "method", "rule", "phase1", "phase2", "layer",
                 "subset", "accuracy", "hits", "queries"],
    )  # fmt: skip


def sensitivity_frame() -> pd.DataFrame:
    """ρ for two methods at three layers and three lrs; some undefined counts are non-zero."""
    rows = []
    for method, base in (("norm_grad", 0.8), ("gradient", 0.6)):
        for number, layer in enumerate(LAYERS[1:]):
            for lr, shift in ((0.0, 0.0), (0.001, 0.1), (0.01, 0.2)):
                undefined = 3 if (method == "gradient" and layer == "features.15") else 0
                rows.append(
                    (DATASET, MODEL, ARCH, method, layer, lr, base - shift - 0.05 * number,
                     0.1, 100, undefined)
                )  # fmt: skip
    return pd.DataFrame(
        rows,
        columns=["dataset", "model", "arch", "method", "layer", "lr", "mean", "std", "n",
                 "undefined"],
    )  # fmt: skip


def meta_frame() -> pd.DataFrame:
    rows = []
    for method in ("norm_grad", "linear_approx"):
        for layer in ("features.8", "features.15"):
            for lr, acc in ((0.0, 0.70), (0.001, 0.74), (0.01, 0.72)):
                for subset in ("all", "difficult"):
                    value = acc - (0.1 if subset == "difficult" else 0.0)
                    rows.append(
                        (DATASET, MODEL, ARCH, method, layer, lr, subset, value,
                         int(value * 200), 200)
                    )  # fmt: skip
    return pd.DataFrame(
        rows,
        columns=["dataset", "model", "arch", "method", "layer", "lr", "subset", "accuracy",
                 "hits", "queries"],
    )  # fmt: skip


def combination_frame() -> pd.DataFrame:
    rows = []
    accuracy = 0.60
    for method in ("norm_grad", "linear_approx"):
        for strategy, weights_from in (("uniform", None), ("pointing_accuracy", "test"),
                                       ("pointing_accuracy", "voc07_val")):  # fmt: skip
            for mode in ("sum", "product"):
                accuracy += 0.013
                rows.append(
                    (DATASET, MODEL, ARCH, method, strategy, mode, weights_from, "all",
                     accuracy, int(accuracy * 200), 200)
                )  # fmt: skip
    return pd.DataFrame(
        rows,
        columns=["dataset", "model", "arch", "method", "strategy", "mode", "weights_from",
                 "subset", "accuracy", "hits", "queries"],
    )  # fmt: skip
