# ======================================================================================
# Helpers of the workflow: every Python definition used by the rules lives here.
# ======================================================================================

import json
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError

from backsal.methods import get_method

# Jobs (local, conda or on a cluster, which inherits the environment) import this checkout.
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        [
            str(Path(workflow.basedir) / "src"),
            *filter(None, [os.environ.get("PYTHONPATH")]),
        ]
    )
)

RESULTS = config["results_dir"]
RESOURCES = config["resources_dir"]
RECORDS = f"{RESULTS}/records"
EVALUATION = f"{RESULTS}/evaluation"
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
# Rules running saliency ask for a GPU when the config says the device is one.
GPU = 1 if config["device"] == "cuda" else 0


def _fail(message):
    raise WorkflowError(f"config: {message}")


def dataset_entry(name):
    if name not in config["datasets"]:
        _fail(f"unknown dataset {name!r}; datasets are {sorted(config['datasets'])}")
    return config["datasets"][name]


def model_entry(name):
    if name not in config["models"]:
        _fail(f"unknown model {name!r}; models are {sorted(config['models'])}")
    return config["models"][name]


def models_of_kind(kind):
    return [name for name, entry in config["models"].items() if entry["kind"] == kind]


def section(name):
    """A config section with its schema defaults, or None when the run skips it."""
    return config.get(name) or None


def combining():
    return bool(section("combination") and config["combination"]["methods"])


def _check_methods(key, methods):
    for method in methods:
        try:
            get_method(method)
        except ValueError as error:
            _fail(f"{key}: {error}")


def _check_config():
    for name, entry in config["models"].items():
        if entry["kind"] == "small":
            if "arch" not in entry or "train" not in entry:
                _fail(f"models.{name}: a small model needs arch and train")
            for key in ("dataset", "test_dataset"):
                train_set = entry["train"][key]
                if dataset_entry(train_set)["kind"] != "cluttered_digits":
                    _fail(
                        f"models.{name}.train.{key}: {train_set!r} is not a cluttered_digits dataset"
                    )
    for name, entry in config["datasets"].items():
        if entry["kind"] == "cluttered_digits" and "split" not in entry:
            _fail(
                f"datasets.{name}: a cluttered_digits dataset needs split (train or test)"
            )
    for key in ("pointing", "sensitivity"):
        for run in (section(key) or {}).get("runs", []):
            dataset_entry(run["dataset"])
            model_entry(run["model"])
            if (
                dataset_entry(run["dataset"])["kind"] == "imagenet"
                and key == "pointing"
            ):
                _fail(f"{key}.runs: ImageNet val has no boxes for the pointing game")
    for key in ("pointing", "combination", "meta", "sensitivity"):
        _check_methods(f"{key}.methods", (section(key) or {}).get("methods", []))
    weights_from = (section("combination") or {}).get("weights_from", "test")
    if section("combination") and weights_from != "test":
        dataset_entry(weights_from)


_check_config()


# --------------------------------------------------------------------------------------
# What runs
# --------------------------------------------------------------------------------------


def rules_of(methods):
    """Backward rules needed by methods, in the engine's order."""
    needed = {get_method(m).rule for m in methods}
    order = ("plain", "guided", "deconvnet", "excitation", "contrastive_excitation")
    return [name for name in order if name in needed]


def methods_of(methods, backward):
    return [m for m in methods if get_method(m).rule == backward]


def pointing_runs():
    return [(run["dataset"], run["model"]) for run in config["pointing"]["runs"]]


def weights_runs():
    """(dataset, model) pairs measured only to weight the layer combination."""
    combination = section("combination")
    if (
        not combination
        or not combination["methods"]
        or combination["weights_from"] == "test"
    ):
        return []
    if "pointing_accuracy" not in combination["strategies"]:
        return []
    return [(combination["weights_from"], model) for _, model in pointing_runs()]


def sensitivity_runs():
    sensitivity = section("sensitivity")
    return (
        []
        if not sensitivity
        else [(r["dataset"], r["model"]) for r in sensitivity["runs"]]
    )


def shards(key):
    return list(range(config[key]["shards"]))


# --------------------------------------------------------------------------------------
# Inputs of jobs
# --------------------------------------------------------------------------------------


def dataset_descriptor(name):
    return f"{RESULTS}/datasets/{name}.json"


def model_descriptor(name):
    return f"{RESULTS}/models/{name}.json"


def job_inputs(wildcards):
    """The dataset and model a (dataset, model) job needs."""
    return {
        "dataset": dataset_descriptor(wildcards.dataset),
        "model": model_descriptor(wildcards.model),
    }


def pointing_methods(wildcards):
    """The pointing methods of a run; the weights runs need the combination methods only."""
    if (wildcards.dataset, wildcards.model) in pointing_runs():
        return config["pointing"]["methods"]
    return config["combination"]["methods"]


def pointing_rules(wildcards):
    return rules_of(pointing_methods(wildcards))


def pointing_records(wildcards):
    return expand(
        f"{RECORDS}/pointing/{wildcards.dataset}/{wildcards.model}/{{backward}}/shard-{{shard}}.parquet",
        backward=pointing_rules(wildcards),
        shard=shards("pointing"),
    )


def combination_records(wildcards):
    return expand(
        f"{RECORDS}/combination/{wildcards.dataset}/{wildcards.model}/{{backward}}/shard-{{shard}}.parquet",
        backward=rules_of(config["combination"]["methods"]),
        shard=shards("pointing"),
    )


def combination_weights_input(wildcards):
    source = config["combination"]["weights_from"]
    dataset = wildcards.dataset if source == "test" else source
    return f"{EVALUATION}/pointing/{dataset}/{wildcards.model}.parquet"


def with_center(wildcards):
    """The first rule job of a shard also records the center baseline."""
    return wildcards.backward == pointing_rules(wildcards)[0]


def layers_setting(key):
    return config[key].get("layers", "probe")


# --------------------------------------------------------------------------------------
# Final outputs
# --------------------------------------------------------------------------------------


def run_names(runs):
    return [f"{dataset}/{model}" for dataset, model in runs]


def evaluation_tables():
    tables = {
        "pointing": expand(
            f"{EVALUATION}/pointing/{{run}}.parquet", run=run_names(pointing_runs())
        )
    }
    combination = section("combination")
    if combination and combination["methods"]:
        tables["combination"] = expand(
            f"{EVALUATION}/combination/{{run}}.parquet", run=run_names(pointing_runs())
        )
    meta = section("meta")
    if meta and meta["methods"]:
        tables["meta"] = expand(
            f"{EVALUATION}/meta/{{run}}.parquet", run=run_names(pointing_runs())
        )
    if sensitivity_runs() and config["sensitivity"]["methods"]:
        tables["sensitivity"] = expand(
            f"{EVALUATION}/sensitivity/{{run}}.parquet",
            run=run_names(sensitivity_runs()),
        )
    return tables


def merged_tables():
    return {kind: f"{EVALUATION}/{kind}.parquet" for kind in evaluation_tables()}


def params_json(value):
    """A parameter passed to a script, canonical so that a change reruns the job."""
    return json.loads(json.dumps(value))


# --------------------------------------------------------------------------------------
# Tables and figures
# --------------------------------------------------------------------------------------

TABLE_SUFFIXES = ["csv", "md", "tex"]


def expand_runs(root, runs, stems, suffixes):
    """``root/dataset/model/stem.suffix`` for every run, stem and suffix."""
    return [
        f"{root}/{dataset}/{model}/{stem}.{suffix}"
        for dataset, model in runs
        for stem in stems
        for suffix in suffixes
    ]


def _spec(model):
    from backsal.models import get_spec

    entry = model_entry(model)
    return get_spec(
        entry["arch"] if entry["kind"] == "small" else entry.get("registry") or model
    )


def _layers_of(model, setting):
    if isinstance(setting, dict):
        setting = setting.get(model, "probe")
    if setting == "probe":
        return list(_spec(model).probe_layers)
    if setting == "combination":
        return list(_spec(model).combination_layers)
    return list(setting)


def layer_order():
    """Per model, every layer any stage evaluates, shallow to deep with the input first.

    The spec's probe order ranks the layers; layers outside it (e.g. VGG16's pool4,
    features.23) go by their position in the model's module names.
    """
    order = {}
    for model in config["models"]:
        spec = _spec(model)
        used = set(spec.combination_layers) if combining() else set()
        for key in ("pointing", "meta", "sensitivity"):
            if section(key):
                used.update(_layers_of(model, config[key].get("layers", "probe")))
        ranked = list(spec.probe_layers)
        extra = sorted(
            used - set(ranked),
            key=lambda name: [int(p) if p.isdigit() else p for p in name.split(".")],
        )
        for (
            name
        ) in extra:  # insert by the numeric suffix among same-prefix probe layers
            position = len(ranked)
            for i, probe in enumerate(ranked):
                if (
                    probe.rsplit(".", 1)[0] == name.rsplit(".", 1)[0]
                    and probe.split(".")[-1].isdigit()
                ):
                    if int(probe.split(".")[-1]) > int(name.split(".")[-1]):
                        position = i
                        break
            ranked.insert(position, name)
        order[model] = ["input", *ranked]
    return order


def meta_runs():
    """Runs with a meta-saliency figure: meta pointing runs and sensitivity runs with an lr grid."""
    runs = list(pointing_runs()) if "meta" in merged_tables() else []
    if "sensitivity" in merged_tables() and any(
        lr > 0 for lr in config["sensitivity"]["lrs"]
    ):
        runs += [run for run in sensitivity_runs() if run not in runs]
    return runs


def meta_figure_inputs(wildcards):
    inputs = {"meta": f"{EVALUATION}/meta.parquet"}
    if "sensitivity" in merged_tables():
        inputs["sensitivity"] = f"{EVALUATION}/sensitivity.parquet"
    return inputs


def meta_table_outputs(root):
    outputs = expand_runs(
        root,
        pointing_runs(),
        ["meta_pointing_all", "meta_pointing_difficult"],
        TABLE_SUFFIXES,
    )
    if "sensitivity" in merged_tables() and any(
        lr > 0 for lr in config["sensitivity"]["lrs"]
    ):
        outputs += expand_runs(
            root, sensitivity_runs(), ["meta_sensitivity"], TABLE_SUFFIXES
        )
    return outputs


def findings_inputs(wildcards):
    return merged_tables()


def final_outputs():
    outputs = [*merged_tables().values(), f"{RESULTS}/findings.md"]
    outputs += rules.figures_pointing.output
    defined = {each.name for each in workflow.rules}
    for name in (
        "figures_combination",
        "figures_sensitivity",
        "figures_meta",
        "reference_comparison",
    ):
        if name in defined:
            outputs += getattr(rules, name).output
    outputs += expand(
        f"{FIGURES}/{{run}}/qualitative_{{k:03d}}.png",
        run=run_names(pointing_runs()),
        k=range(config["pointing"]["examples"]),
    )
    return outputs
