"""Findings: each claim's verdict follows its criterion on tables built to meet it or not."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from backsal.provenance import read_provenance
from backsal.report import describe_findings, write_findings
from report_synthetic import provenance

LAYERS = ["input", "conv1", "conv2", "conv3", "conv4"]
CENTER = 0.60

# accuracies at LAYERS; every claim is clearly met
SUPPORTING = {
    "gradient": [0.70, 0.80, 0.85, 0.80, 0.20],
    "guided_backprop": [0.70, 0.70, 0.72, 0.70, 0.20],
    "linear_approx": [0.60, 0.82, 0.86, 0.87, 0.90],
    "norm_grad_selective": [0.60, 0.81, 0.86, 0.86, 0.88],
    "norm_grad": [0.70, 0.75, 0.85, 0.80, 0.70],
    "grad_cam": [0.50, 0.55, 0.60, 0.70, 0.90],
}
# every claim clearly missed
CONTRARY = {
    "gradient": [0.70, 0.80, 0.85, 0.80, 0.78],  # 7 pp below its best: no collapse
    "guided_backprop": [0.70, 0.70, 0.72, 0.70, 0.71],
    "linear_approx": [0.60, 0.82, 0.55, 0.85, 0.90],  # below the center at conv2
    "norm_grad_selective": [0.60, 0.81, 0.86, 0.86, 0.88],
    "norm_grad": [0.70, 0.72, 0.75, 0.80, 0.85],  # best at the last layer
    "grad_cam": [0.50, 0.80, 0.82, 0.85, 0.90],  # first layer above the center
}


def _pointing(values: dict[str, list[float]], center: float = CENTER) -> pd.DataFrame:
    rows = [
        ("voc07", "resnet_voc07", "resnet50", method, layer, "all", accuracy)
        for method, accuracies in values.items()
        for layer, accuracy in zip(LAYERS, accuracies, strict=True)
    ]
    rows.append(("voc07", "resnet_voc07", "resnet50", "center", "n/a", "all", center))
    # a difficult-subset row that would flip grad_cam if subsets were mixed up
    rows.append(("voc07", "resnet_voc07", "resnet50", "grad_cam", "conv1", "difficult", 0.99))
    return pd.DataFrame(
        rows, columns=["dataset", "model", "arch", "method", "layer", "subset", "accuracy"]
    )


def _sensitivity(meta_mean: float) -> pd.DataFrame:
    rows = [
        ("imagenet", "resnet50", "resnet50", "norm_grad", "conv4", 0.0, 0.50, 0.10, 100, 2),
        ("imagenet", "resnet50", "resnet50", "norm_grad", "conv4", 0.001, meta_mean, 0.10, 100, 1),
        ("imagenet", "resnet50", "resnet50", "norm_grad", "conv4", 0.01, 0.55, 0.10, 100, 0),
        # an earlier layer with a larger drop must not be the one tested
        ("imagenet", "resnet50", "resnet50", "norm_grad", "conv3", 0.0, 0.90, 0.10, 100, 0),
        ("imagenet", "resnet50", "resnet50", "norm_grad", "conv3", 0.001, 0.10, 0.10, 100, 0),
    ]
    return pd.DataFrame(
        rows,
        columns=[
            "dataset",
            "model",
            "arch",
            "method",
            "layer",
            "lr",
            "mean",
            "std",
            "n",
            "undefined",
        ],
    )


def _by_claim(findings):
    return {f.claim: f for f in findings}


def test_every_claim_holds_on_supporting_tables():
    findings = _by_claim(describe_findings(_pointing(SUPPORTING), _sensitivity(0.30), None, LAYERS))
    assert set(findings) == {
        "grad_cam_fails_early", "gradient_collapses_last", "guided_backprop_collapses_last",
        "linear_approx_strong_everywhere", "norm_grad_selective_strong_everywhere",
        "norm_grad_peaks_intermediate", "meta_lowers_norm_grad_rho", "weakly_class_sensitive",
    }  # fmt: skip
    for finding in findings.values():
        assert finding.holds is True, finding.sentence
        assert " — holds: " in finding.sentence and str(finding) == finding.sentence
    grad_cam = findings["grad_cam_fails_early"].sentence
    assert "55.0% at conv1" in grad_cam and "90.0% at conv4" in grad_cam and "60.0%" in grad_cam
    assert "20.0% at conv4" in findings["gradient_collapses_last"].sentence
    assert "85.0% at its best layer conv2" in findings["gradient_collapses_last"].sentence
    assert "85.0% at conv2" in findings["norm_grad_peaks_intermediate"].sentence
    rho = findings["meta_lowers_norm_grad_rho"]
    assert rho.numbers["layer"] == "conv4" and rho.numbers["lr"] == 0.001
    assert "(2 undefined)" in rho.sentence and "(1 undefined)" in rho.sentence


def test_every_claim_fails_on_contrary_tables():
    findings = _by_claim(describe_findings(_pointing(CONTRARY), _sensitivity(0.49), None, LAYERS))
    for finding in findings.values():
        if finding.claim in ("norm_grad_selective_strong_everywhere", "weakly_class_sensitive"):
            assert finding.holds is True  # unchanged in CONTRARY: the controls
            continue
        assert finding.holds is False, finding.sentence
        assert " — does not hold: " in finding.sentence
    assert findings["linear_approx_strong_everywhere"].numbers["failing_layers"] == ["conv2"]
    assert "80.0% at conv1" in findings["grad_cam_fails_early"].sentence


def test_threshold_edges_follow_the_documented_criteria():
    # gradient exactly 10 pp below its best layer: the criterion says "at least", so it holds
    values = dict(SUPPORTING, gradient=[0.70, 0.80, 0.85, 0.80, 0.75])
    findings = _by_claim(describe_findings(_pointing(values), None, None, LAYERS))
    assert findings["gradient_collapses_last"].holds is True
    values = dict(SUPPORTING, gradient=[0.70, 0.80, 0.85, 0.80, 0.76])
    findings = _by_claim(describe_findings(_pointing(values), None, None, LAYERS))
    assert findings["gradient_collapses_last"].holds is False


def test_missing_data_is_not_tested_rather_than_guessed():
    values = {k: v for k, v in SUPPORTING.items() if k != "grad_cam"}
    findings = _by_claim(describe_findings(_pointing(values), None, None, LAYERS))
    missing = findings["grad_cam_fails_early"]
    assert missing.holds is None and missing.verdict == "not tested"
    assert "not tested" in missing.sentence
    no_center = _pointing(SUPPORTING)
    no_center = no_center[no_center["method"] != "center"]
    findings = _by_claim(describe_findings(no_center, None, None, LAYERS))
    assert findings["linear_approx_strong_everywhere"].holds is None


def test_meta_sentence_quotes_pointing_from_the_meta_table():
    meta = pd.DataFrame(
        {"dataset": ["imagenet"] * 2, "model": ["resnet50"] * 2, "arch": ["resnet50"] * 2,
         "method": ["norm_grad"] * 2, "layer": ["conv4"] * 2, "lr": [0.0, 0.001],
         "subset": ["all"] * 2, "accuracy": [0.70, 0.75], "hits": [7, 8], "queries": [10, 10]}
    )  # fmt: skip
    findings = _by_claim(describe_findings(None, _sensitivity(0.30), meta, LAYERS))
    assert "70.0% → 75.0%" in findings["meta_lowers_norm_grad_rho"].sentence


def test_write_findings(tmp_path):
    findings = describe_findings(_pointing(SUPPORTING), _sensitivity(0.30), None, LAYERS)
    record = provenance()
    md, js = write_findings(findings, tmp_path / "findings", record)
    text = md.read_text()
    assert text.count("- **holds** — ") == len(findings)
    document = json.loads(js.read_text())
    assert [f["verdict"] for f in document["findings"]] == ["holds"] * len(findings)
    assert read_provenance(md) == record and read_provenance(js) == record


def test_layer_order_may_differ_per_arch():
    with pytest.raises(ValueError, match="no entry for model 'resnet_voc07' or arch 'resnet50'"):
        describe_findings(_pointing(SUPPORTING), None, None, {"vgg16": LAYERS})
    findings = describe_findings(_pointing(SUPPORTING), None, None, {"resnet50": LAYERS})
    assert all(f.holds for f in findings)


def _run(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(dataset="voc07", model="resnet_voc07", arch="resnet50")


def test_weakly_class_sensitive_counts_methods_by_their_mean_rho():
    def table(means: dict[str, list[float]]) -> pd.DataFrame:
        rows = [
            {"method": m, "layer": layer, "lr": 0.0, "mean": v, "std": 0.1, "n": 10, "undefined": 1}
            for m, values in means.items()
            for layer, v in zip(["conv3", "conv4"], values, strict=True)
        ]
        rows.append({"method": "gradient", "layer": "conv4", "lr": 0.01, "mean": 0.0, "std": 0.1,
                     "n": 10, "undefined": 0})  # fmt: skip # meta rows do not count
        return _run(pd.DataFrame(rows))

    weak = {"gradient": [0.6, 0.5], "norm_grad": [0.4, 0.6], "grad_cam": [0.1, 0.2]}
    finding = _by_claim(describe_findings(None, table(weak), None, LAYERS))[
        "weakly_class_sensitive"
    ]
    # means 0.55, 0.50 (exactly the threshold counts), 0.15: 2 of 3
    assert (
        finding.holds is True and "2 of 3" in finding.sentence and "6 undefined" in finding.sentence
    )
    strong = dict(weak, norm_grad=[0.4, 0.59])
    finding = _by_claim(describe_findings(None, table(strong), None, LAYERS))[
        "weakly_class_sensitive"
    ]
    assert finding.holds is False and "1 of 3" in finding.sentence


def _combination(accuracy: dict[str, float]) -> pd.DataFrame:
    rows = [
        {"method": m, "strategy": "uniform", "mode": "sum", "weights_from": "fixed",
         "subset": "all", "accuracy": a}
        for m, a in accuracy.items()
    ]  # fmt: skip
    rows.append({"method": "gradient", "strategy": "linear", "mode": "sum",
                 "weights_from": "fixed", "subset": "all", "accuracy": 0.0})  # fmt: skip
    return _run(pd.DataFrame(rows))


def test_combining_trades_resolution_between_the_finest_and_the_best_layer():
    combined = ["conv1", "conv2", "conv3", "conv4"]
    # gradient: conv1 0.80, best 0.85; linear_approx: conv1 0.82, best 0.90; grad_cam 0.55 / 0.90
    accuracy = {"gradient": 0.85, "linear_approx": 0.86, "grad_cam": 0.95}
    finding = _by_claim(
        describe_findings(_pointing(SUPPORTING), None, None, LAYERS,
                          combination=_combination(accuracy), combination_layers={"resnet50": combined})
    )["combining_trades_resolution"]  # fmt: skip
    # gradient +5 pp over conv1 and = its best: yes; linear_approx +4 pp: no; grad_cam above best: no
    assert finding.holds is False and "1 of 3" in finding.sentence
    assert finding.numbers["gradient"]["holds"] is True
    accuracy["linear_approx"] = 0.87
    finding = _by_claim(
        describe_findings(_pointing(SUPPORTING), None, None, LAYERS,
                          combination=_combination(accuracy), combination_layers={"resnet50": combined})
    )["combining_trades_resolution"]  # fmt: skip
    assert finding.holds is True and "2 of 3" in finding.sentence
    untested = _by_claim(
        describe_findings(
            _pointing(SUPPORTING), None, None, LAYERS, combination=_combination(accuracy)
        )
    )["combining_trades_resolution"]
    assert untested.holds is None


def _sanity_rows(rho: dict[str, float], layer: str = "input") -> pd.DataFrame:
    rows = []
    for method, value in rho.items():
        for depth in (1, 2):
            rows.append({"randomisation": "cascading", "depth": depth, "method": method,
                         "layer": layer, "spearman_mean": value if depth == 2 else 0.99})  # fmt: skip
        rows.append({"randomisation": "independent", "depth": 2, "method": method,
                     "layer": layer, "spearman_mean": 0.0})  # fmt: skip
    return _run(pd.DataFrame(rows))


def test_sanity_finding_reads_the_full_cascade():
    finding = _by_claim(
        describe_findings(None, None, None, LAYERS,
                          sanity=_sanity_rows({"guided_backprop": 0.8, "gradient": 0.1, "norm_grad": 0.5}))
    )["sanity_guided_backprop_ignores_weights"]  # fmt: skip
    assert finding.holds is True
    assert finding.numbers["stay_correlated"] == ["guided_backprop", "norm_grad"]
    finding = _by_claim(
        describe_findings(None, None, None, LAYERS,
                          sanity=_sanity_rows({"guided_backprop": 0.3, "gradient": 0.1}, "conv4"))
    )["sanity_guided_backprop_ignores_weights"]  # fmt: skip
    assert finding.holds is False and finding.numbers["where"] == "mean over layers"
    finding = _by_claim(
        describe_findings(None, None, None, LAYERS, sanity=_sanity_rows({"gradient": 0.1}))
    )["sanity_guided_backprop_ignores_weights"]
    assert finding.holds is None and "gradient 0.10" in finding.sentence


def test_sanity_finding_gives_standard_errors_when_the_table_has_them():
    rows = _sanity_rows({"guided_backprop": 0.45, "gradient": 0.35})
    rows = rows.assign(spearman_std=0.1, n=26, undefined=1)
    finding = _by_claim(describe_findings(None, None, None, LAYERS, sanity=rows))[
        "sanity_guided_backprop_ignores_weights"
    ]
    assert finding.holds is False
    assert finding.numbers["standard_error"] == pytest.approx(
        {"gradient": 0.02, "guided_backprop": 0.02}
    )
    assert (
        "at input, mean ± standard error over 26 queries: gradient 0.35 ± 0.02" in finding.sentence
    )
    assert finding.numbers["where"] == "input"
