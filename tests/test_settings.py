"""Stage settings, layer resolution and ordering, config checks, and the generated config README."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from backsal.experiments import architecture_layers
from backsal.experiments.config_readme import README, render
from backsal.experiments.settings import (
    ALL_RULES,
    SCHEMA,
    ConfigError,
    MetaSettings,
    PointingSettings,
    SensitivitySettings,
    TrainSettings,
    WorkflowSettings,
    canonical,
    methods_of_group,
    names_pattern,
    rule_groups,
    rules_of,
    schema_defaults,
)
from backsal.models import get_spec
from backsal.models.layers import order_layers, select_layers

ROOT = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((ROOT / "tests" / "config" / "tiny.yaml").read_text())


def settings_of(**changes: object) -> WorkflowSettings:
    config = yaml.safe_load((ROOT / "tests" / "config" / "tiny.yaml").read_text())
    for dotted, value in changes.items():
        node = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return WorkflowSettings.from_config(config)


def small_layers(model: str) -> list[str]:
    return architecture_layers(model, TINY["models"][model])


# ---------------------------------------------------------------------------- settings objects


def test_defaults_come_from_the_schema():
    meta = MetaSettings.from_config({"methods": ["gradient"]})
    assert meta.shards == 4 and meta.batch_rows == 16 and meta.layers == "combination"
    assert meta.lrs == (0.01, 0.005, 0.001, 0.0005, 0.0001)
    assert schema_defaults("models", "*", "train") == {"epochs": 6, "batch_size": 64, "lr": 0.003}
    train = TrainSettings.from_config({"dataset": "a", "test_dataset": "b"})
    assert (train.epochs, train.batch_size, train.lr) == (6, 64, 0.003)


def test_params_round_trip_as_plain_values_without_the_plan_keys():
    pointing = settings_of().pointing
    params = pointing.params(methods=["gradient"])
    assert "runs" not in params and params["methods"] == ["gradient"]
    assert all(not isinstance(value, tuple) for value in params.values())
    rebuilt = PointingSettings.from_params(params)
    assert rebuilt.methods == ("gradient",) and rebuilt.layers == pointing.layers


def test_params_do_not_depend_on_the_order_keys_were_written_in():
    one = settings_of(**{"pointing.layers": {"vgg": ["features.6"], "other": "probe"}})
    two = settings_of(**{"pointing.layers": {"other": "probe", "vgg": ["features.6"]}})
    assert repr(one.pointing.params()) == repr(two.pointing.params())
    assert repr(canonical({"b": 1, "a": {"d": 2, "c": [3]}})) == repr(
        {"a": {"c": [3], "d": 2}, "b": 1}
    )


def test_each_stage_reads_its_own_keys():
    settings = settings_of(**{"meta.strategy": "loop", "sensitivity.strategy": "batched"})
    assert settings.meta.strategy == "loop" and settings.sensitivity.strategy == "batched"
    assert settings.combination.shards == 2 and settings.combination.batch_rows == 16
    with pytest.raises(ConfigError, match=r"sensitivity: unknown keys \['shard'\]"):
        SensitivitySettings.from_config({"shard": 2})


def test_enabled_stages():
    assert all(settings_of().enabled(stage) for stage in ("pointing", "combination", "meta"))
    assert not settings_of(**{"meta.methods": []}).enabled("meta")
    assert not settings_of(**{"sensitivity.runs": []}).enabled("sensitivity")
    assert settings_of().enabled("sanity") and settings_of().enabled("deletion")
    assert not settings_of(**{"sanity.runs": []}).enabled("sanity")
    assert not settings_of(**{"deletion.methods": []}).enabled("deletion")
    config = dict(TINY)
    del config["combination"]
    assert not WorkflowSettings.from_config(config).enabled("combination")
    assert not settings_of().enabled("reference")


def test_rules_follow_the_engine_order_and_names_pattern_matches_exactly():
    assert rules_of(["contrastive_excitation_backprop", "guided_backprop", "gradient"]) == [
        "plain",
        "guided",
        "contrastive_excitation",
    ]
    assert names_pattern(["a.b", "c"]) == r"a\.b|c"
    assert names_pattern([]) == "(?!)"


def test_rule_groups_split_by_rule_or_run_all_rules_in_one_job():
    methods = ["gradient", "guided_backprop", "norm_grad", "deconvnet"]
    assert rule_groups(methods, split=True) == ["plain", "guided", "deconvnet"]
    assert rule_groups(methods, split=False) == [ALL_RULES]
    # one rule needs no group of its own: its records keep the rule's name either way
    assert rule_groups(["gradient", "norm_grad"], split=False) == ["plain"]
    assert methods_of_group(methods, "plain") == ["gradient", "norm_grad"]
    assert methods_of_group(methods, "deconvnet") == ["deconvnet"]
    assert methods_of_group(methods, ALL_RULES) == methods
    assert settings_of().pointing.split_rules is True  # the schema's default


# ---------------------------------------------------------------------------- layers


def test_resolve_layers_from_every_kind_of_setting():
    spec = get_spec("small_vgg")
    assert select_layers("probe", spec, "m") == list(spec.probe_layers)
    assert select_layers("combination", spec, "m", input=True) == [
        *spec.combination_layers,
        "input",
    ]
    assert select_layers(["features.6"], spec, "m", also=["features.6", "features.2"]) == [
        "features.6",
        "features.2",
    ]
    assert select_layers({"m": ["features.6"]}, spec, "m") == ["features.6"]
    assert select_layers({"other": ["features.6"]}, spec, "m") == list(spec.probe_layers)
    with pytest.raises(ValueError, match="use one of probe, combination"):
        select_layers("blocks_", spec, "m")


def test_order_layers_inserts_extra_layers_by_their_index():
    probes = ["features.3", "features.8", "features.22", "features.29", "classifier.1"]
    used = ["features.23", "features.8", "avgpool", "input"]
    assert order_layers(probes, used) == [
        "input",
        "features.3",
        "features.8",
        "features.22",
        "features.23",
        "features.29",
        "classifier.1",
        "avgpool",
    ]


def test_layer_order_of_the_tiny_config_holds_every_evaluated_layer():
    order = settings_of().layer_order()["vgg"]
    spec = get_spec("small_vgg")
    assert order[0] == "input" and set(spec.probe_layers) <= set(order)
    assert order.index("features.6") < order.index("features.13") < order.index("features.20")


def test_scatter_layer_is_the_deepest_sensitivity_layer():
    assert settings_of().scatter_layers() == {"vgg": "features.20"}
    listed = settings_of(**{"sensitivity.layers": ["features.20", "features.6"]})
    assert listed.scatter_layers() == {"vgg": "features.20"}
    only_input = settings_of(**{"sensitivity.layers": [], "sensitivity.input": True})
    assert only_input.scatter_layers() == {"vgg": "input"}


def test_architecture_layers_are_known_without_weights():
    names = small_layers("vgg")
    assert {"features.6", "features.13", "features.20"} <= set(names)
    registry = architecture_layers("vgg16_voc07", {"kind": "registry"})
    assert "features.29" in registry


# ---------------------------------------------------------------------------- checks


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pointing.layers": ["features.6", "features.99"]}, r"pointing\.layers: .*features\.99"),
        ({"meta.layers": {"vgg": ["layer9"]}}, r"meta\.layers: .*layer9"),
        ({"sensitivity.layers": ["fc"]}, r"sensitivity\.layers: .*'fc'"),
        ({"figures.qualitative_methods": ["deconvnet"]}, r"qualitative_methods: \['deconvnet'\]"),
        ({"figures.qualitative_methods": ["gradcam"]}, r"qualitative_methods: .*gradcam"),
        ({"pointing.runs": [{"dataset": "tset", "model": "vgg"}]}, r"pointing\.runs: .*'tset'"),
        ({"combination.weights_from": "val"}, r"combination\.weights_from: .*'val'"),
        ({"figures.grid_layers": ["features.10"]}, r"figures\.grid_layers: none"),
        ({"sanity.layers": ["features.99"]}, r"sanity\.layers: .*features\.99"),
        ({"deletion.methods": ["gradcam"]}, r"deletion\.methods: .*gradcam"),
        ({"sanity.runs": [{"dataset": "tset", "model": "vgg"}]}, r"sanity\.runs: .*'tset'"),
    ],
)
def test_config_mistakes_name_their_key(change, message):
    with pytest.raises(ConfigError, match=message):
        settings_of(**change).check(layer_names=small_layers)


def test_the_shipped_configs_pass_their_checks():
    for name in ("config.yaml", "paper.yaml"):
        config = yaml.safe_load((ROOT / "config" / name).read_text())
        WorkflowSettings.from_config(config).check()
    settings_of().check(layer_names=small_layers)


# ---------------------------------------------------------------------------- config README


def test_config_readme_is_generated_from_the_current_schema():
    expected = render(yaml.safe_load(SCHEMA.read_text()))
    assert README.read_text() == expected, (
        "config/README.md is stale: run python -m backsal.experiments.config_readme"
    )


def test_schema_descriptions_parse_as_text():
    """A flow mapping with an unquoted comma in a description parses into stray keys."""
    allowed = {
        "type", "description", "default", "items", "enum", "minimum", "exclusiveMinimum",
        "minItems", "minProperties", "additionalProperties", "properties", "required", "$ref",
    }  # fmt: skip

    def walk(node: dict, where: str) -> None:
        for key, spec in node.get("properties", {}).items():
            stray = set(spec) - allowed
            assert not stray, f"{where}{key}: stray schema keys {stray}"
            walk(spec, f"{where}{key}.")
            if isinstance(spec.get("additionalProperties"), dict):
                walk(spec["additionalProperties"], f"{where}{key}.<name>.")

    walk(yaml.safe_load(SCHEMA.read_text()), "")
