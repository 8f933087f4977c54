"""The workflow's jobs as library functions: shards, records, evaluation, conv layers, ρ."""

import numpy as np
import pandas as pd
import pytest
import torch

import backsal
from backsal.data.synthetic import cluttered_digits
from backsal.evaluation import P_TRUE, SENSITIVITY_RECORD_COLUMNS
from backsal.experiments import (
    CombinationSettings,
    MetaSettings,
    PointingSettings,
    SensitivitySettings,
    evaluate_pointing,
    evaluate_sensitivity,
    run_combination,
    run_meta_pointing,
    run_pointing,
    run_sensitivity,
)
from backsal.experiments.pointing import LayerPlan, iter_shard
from backsal.experiments.resources import OpenedModel
from backsal.experiments.settings import methods_of_group, rules_of
from backsal.metrics import center_hits, spearman
from backsal.models import get_spec


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return cluttered_digits("test", 12, seed=3, cache_dir=tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def opened():
    spec = get_spec("small_vgg")
    model = spec.build(seed=1)  # untrained: the jobs' bookkeeping does not care
    return OpenedModel(name="vgg", model=model, spec=spec, checksum="test", arch="small_vgg")


def test_shards_partition_the_batches(digits, opened):
    everything = [
        tuple(b.query_refs.flatten().tolist())
        for b in iter_shard(
            digits, opened, shard=0, shards=1, batch_rows=5, device=torch.device("cpu")
        )
    ]
    parts = [
        tuple(b.query_refs.flatten().tolist())
        for shard in range(3)
        for b in iter_shard(
            digits, opened, shard=shard, shards=3, batch_rows=5, device=torch.device("cpu")
        )
    ]
    assert sorted(parts) == sorted(everything)
    with pytest.raises(ValueError, match="shard 3"):
        next(
            iter_shard(digits, opened, shard=3, shards=3, batch_rows=5, device=torch.device("cpu"))
        )


def test_pointing_records_cover_every_query_method_and_layer(digits, opened):
    methods = ["gradient", "norm_grad", "norm_grad_proper"]
    layers = ["features.6", "features.20", "input"]
    settings = PointingSettings.from_config(
        {"methods": methods, "layers": layers, "batch_rows": 7, "shards": 1, "examples": 2}
    )
    records, examples = run_pointing(digits, opened, settings, with_center=True)
    queries = digits.num_queries()
    counts = records.groupby(["method", "layer"], observed=True).size()
    assert counts[("gradient", "input")] == queries and counts[("center", "n/a")] == queries
    # norm_grad_proper has no input-level map; it is recorded at the probe layers it is computed "at"
    assert ("norm_grad_proper", "input") not in counts and counts[
        ("norm_grad_proper", "features.6")
    ] == queries
    # the center baseline equals the metric computed directly
    refs = [(r, q) for r in digits.records for q in r.queries]
    masks = [q.mask(r.height, r.width) for r, q in refs]
    direct = center_hits(masks, digits.pointing_tolerance)
    by_query = (
        records[records["method"] == "center"].sort_values(["record", "query"])["hit"].to_numpy()
    )
    assert by_query.tolist() == direct.tolist()
    assert examples.images.shape == (2, 3, 64, 64)
    assert examples.maps["norm_grad"]["features.6"].shape == (2, 64, 64)


def test_one_job_of_all_rules_records_what_one_job_per_rule_records(digits, opened):
    """split_rules: false changes the jobs, not the records."""
    methods = ["gradient", "guided_backprop", "deconvnet", "excitation_backprop", "norm_grad"]
    keys = ["method", "layer", "record", "query"]

    def records(methods, with_center):
        settings = PointingSettings.from_config(
            {"methods": methods, "layers": ["features.6", "input"], "batch_rows": 5, "shards": 1}
        )
        return run_pointing(digits, opened, settings, with_center=with_center)[0]

    together = records(methods, True)
    apart = pd.concat(
        [
            records(methods_of_group(methods, rule), i == 0)
            for i, rule in enumerate(rules_of(methods))
        ]
    )
    for frame in (together, apart):
        frame["method"] = frame["method"].astype(str)
        frame["layer"] = frame["layer"].astype(str)
    pd.testing.assert_frame_equal(
        together.sort_values(keys).reset_index(drop=True),
        apart.sort_values(keys).reset_index(drop=True),
    )


def test_layer_plan_runs_conv_methods_at_the_feeding_conv(opened):
    plan = LayerPlan.build(
        opened.model, ["norm_grad_proper", "gradient"], ["features.2", "features.6", "input"]
    )
    assert plan.method_layers == {"norm_grad_proper": ["features.0", "features.4"]}
    maps = {
        "norm_grad_proper": {"features.0": torch.zeros(1), "features.4": torch.ones(1)},
        "gradient": {"input": torch.ones(2)},
    }
    renamed = plan.renamed(maps)
    assert set(renamed["norm_grad_proper"]) == {"features.2", "features.6"} and set(
        renamed["gradient"]
    ) == {"input"}


def test_pointing_table_labels_rules_and_phases(digits, opened):
    settings = PointingSettings.from_config(
        {
            "methods": ["conv3x3/max", "guided_backprop"],
            "layers": ["features.13"],
            "input": False,
            "shards": 1,
        }
    )
    records, _ = run_pointing(digits, opened, settings, with_center=True)
    table = evaluate_pointing(records, dataset="d", model="vgg", arch="small_vgg", num_classes=10)
    grid = table[table["method"] == "conv3x3/max"].iloc[0]
    assert (grid["rule"], grid["phase1"], grid["phase2"]) == ("plain", "conv3x3", "max")
    assert table[table["method"] == "guided_backprop"]["rule"].iloc[0] == "guided"
    assert table[table["method"] == "center"]["rule"].iloc[0] == "none"


def test_combination_and_meta_records(digits, opened):
    layers = list(opened.spec.combination_layers)
    weights = {"norm_grad": dict.fromkeys(layers, 0.5)}
    settings = CombinationSettings.from_config(
        {"methods": ["norm_grad"], "strategies": ["uniform", "pointing_accuracy"], "shards": 1}
    )
    combination = run_combination(digits, opened, settings, accuracy_weights=weights)
    assert set(combination["strategy"]) == {"uniform", "pointing_accuracy"} and set(
        combination["mode"]
    ) == {"sum", "product"}
    # equal pointing-accuracy weights are the uniform weights: the same points
    uniform = combination[combination["strategy"] == "uniform"].sort_values(
        ["mode", "record", "query"]
    )
    same = combination[combination["strategy"] == "pointing_accuracy"].sort_values(
        ["mode", "record", "query"]
    )
    assert (uniform[["x", "y"]].to_numpy() == same[["x", "y"]].to_numpy()).all()
    meta_settings = MetaSettings.from_config(
        {
            "methods": ["gradient"],
            "layers": ["input"],
            "lrs": [0.0, 0.01],
            "max_queries": 6,
            "strategy": "loop",
            "shards": 1,
        }
    )
    meta = run_meta_pointing(digits, opened, meta_settings)
    assert sorted(meta["lr"].unique()) == [0.0, 0.01]
    assert meta.groupby("lr").size().tolist() == [meta[meta["lr"] == 0.0].shape[0]] * 2


def test_sensitivity_rho_is_the_spearman_of_the_two_maps(digits, opened):
    settings = SensitivitySettings.from_config(
        {
            "methods": ["norm_grad"],
            "layers": ["features.13"],
            "input": False,
            "lrs": [],
            "max_images": 4,
            "batch_images": 4,
            "shards": 1,
        }
    )
    records = run_sensitivity(digits, opened, settings)
    images = torch.stack([opened.spec.preprocess(digits.load_image(digits[i])) for i in range(4)])
    with torch.no_grad():
        probabilities = opened.model(images).softmax(1)
    c_max, c_min = probabilities.argmax(1), probabilities.argmin(1)
    maps = backsal.saliency(
        opened.model,
        images.repeat(2, 1, 1, 1),
        torch.cat([c_max, c_min]),
        ["norm_grad"],
        ["features.13"],
        size=(64, 64),
    )
    expected = spearman(maps["norm_grad"]["features.13"][:4], maps["norm_grad"]["features.13"][4:])
    np.testing.assert_allclose(
        records.sort_values("record")["rho"].to_numpy(), expected.numpy(), rtol=1e-5
    )
    table = evaluate_sensitivity(records, dataset="d", model="vgg", arch="small_vgg")
    assert int(table["n"].item() + table["undefined"].item()) == 4


def test_sensitivity_records_the_ground_truth_probability(digits, opened):
    settings = SensitivitySettings.from_config(
        {"methods": ["gradient"], "layers": ["features.13"], "input": True, "lrs": [0.01],
         "max_images": 5, "batch_images": 2, "shards": 1}
    )  # fmt: skip
    records = run_sensitivity(digits, opened, settings)
    assert list(records.columns) == list(SENSITIVITY_RECORD_COLUMNS)
    # the digits models are trained with binary cross-entropy: a sigmoid per class, and of an
    # image's several digits the most probable one
    expected = {}
    for index in range(5):
        image = opened.spec.preprocess(digits.load_image(digits[index]))
        with torch.no_grad():
            logits = opened.model(image[None])[0]
        expected[index] = max(
            float(torch.sigmoid(logits[query.class_id])) for query in digits[index].queries
        )
    assert len(records) == 5 * 2 * 2  # images × layers × (plain, one lr)
    for row in records.itertuples():
        assert 0.0 <= getattr(row, P_TRUE) <= 1.0
        assert getattr(row, P_TRUE) == pytest.approx(expected[row.record], rel=1e-5)
