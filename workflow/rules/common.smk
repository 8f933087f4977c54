# ======================================================================================
# Input and output helpers of the rules. The settings of every stage, which stages run
# and every config check live in backsal.experiments.settings (unit-tested); this file
# only turns them into file names.
# ======================================================================================

from types import SimpleNamespace

from snakemake.exceptions import WorkflowError

from backsal.evaluation import KINDS, SUBSETS, TABLE_SUFFIXES, stem_of, stems
from backsal.experiments.meta_examples import meta_maps_layers
from backsal.experiments.settings import (
    ConfigError,
    WorkflowSettings,
    canonical,
    methods_of_group,
    names_pattern,
    rule_groups,
)

RESULTS = config["results_dir"]
RESOURCES = config["resources_dir"]
RECORDS = f"{RESULTS}/records"
EVALUATION = f"{RESULTS}/evaluation"
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
TABLES = f"{RESULTS}/tables"
FIGURES = f"{RESULTS}/figures"

try:
    SETTINGS = WorkflowSettings.from_config(config)
    if workflow.is_main_process:  # jobs re-reading the Snakefile need not check again
        from backsal.experiments import architecture_layers

        SETTINGS.check(
            layer_names=lambda model: architecture_layers(
                model, config["models"][model]
            )
        )
except ConfigError as error:
    raise WorkflowError(f"config: {error}") from None


onstart:
    # Before the first job (not in dry runs, which need no device). Only for local jobs: a
    # cluster's compute nodes have the GPUs that the submitting node may lack.
    if workflow.local_exec:
        from backsal.experiments import check_device

        try:
            check_device(config["device"])
        except RuntimeError as error:
            raise WorkflowError(f"config: {error}") from None


# Rules running saliency ask for a GPU when the config says the device is one (a resource,
# not a param: the same maps on another device are the same result).
GPU = 1 if config["device"] == "cuda" else 0
POINTING_RUNS = SETTINGS.pointing.runs
SENSITIVITY_RUNS = SETTINGS.sensitivity.runs
SANITY_RUNS = SETTINGS.sanity.runs
DELETION_RUNS = SETTINGS.deletion.runs
# the runs of each kind of evaluation table (the others are measured on the pointing runs)
RUNS_OF = {
    "sensitivity": SENSITIVITY_RUNS,
    "sanity": SANITY_RUNS,
    "deletion": DELETION_RUNS,
}
# the faithfulness checks the config runs (one figure rule draws them all)
FAITHFULNESS_CHECKS = [
    stage for stage in ("sanity", "deletion") if SETTINGS.enabled(stage)
]
LAYER_ORDER = SETTINGS.layer_order()


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


def pointing_groups(wildcards):
    """The backward-rule groups of a pointing run's jobs (the `backward` wildcard)."""
    methods = SETTINGS.pointing_methods(wildcards.dataset, wildcards.model)
    return rule_groups(methods, SETTINGS.pointing.split_rules)


def is_first_pointing_group(wildcards):
    return wildcards.backward == pointing_groups(wildcards)[0]


def combination_groups():
    return rule_groups(SETTINGS.combination.methods, SETTINGS.combination.split_rules)


def shard_records(stage, wildcards, backwards=None):
    """The record files of every shard (and backward-rule group) of a (dataset, model) job."""
    run = f"{RECORDS}/{stage}/{wildcards.dataset}/{wildcards.model}"
    shards = range(getattr(SETTINGS, stage).shards)
    if backwards is None:
        return [f"{run}/shard-{shard}.parquet" for shard in shards]
    return [
        f"{run}/{backward}/shard-{shard}.parquet"
        for backward in backwards
        for shard in shards
    ]


def sensitivity_record_files():
    """Every shard's per-image sensitivity records, as ((dataset, model), file), run by run
    (the scatter figure's input)."""
    return [
        ([dataset, model], path)
        for dataset, model in SENSITIVITY_RUNS
        for path in shard_records(
            "sensitivity", SimpleNamespace(dataset=dataset, model=model)
        )
    ]


def combination_weights_input(wildcards):
    source = SETTINGS.combination.weights_from
    dataset = wildcards.dataset if source == "test" else source
    return f"{EVALUATION}/pointing/{dataset}/{wildcards.model}.parquet"


def train_input(key):
    def train_set(wildcards):
        return dataset_descriptor(getattr(SETTINGS.train(wildcards.model), key))

    return train_set


# --------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------


def evaluation_tables(kind):
    runs = RUNS_OF.get(kind, POINTING_RUNS)
    return [f"{EVALUATION}/{kind}/{dataset}/{model}.parquet" for dataset, model in runs]


def merged_tables():
    """The merged evaluation table of every stage that runs, by kind."""
    return {
        kind: f"{EVALUATION}/{kind}.parquet" for kind in KINDS if SETTINGS.enabled(kind)
    }


def per_run(root, runs, outputs, suffixes, subsets=SUBSETS):
    """``root/dataset/model/stem suffix`` for every run, stem of ``outputs`` and suffix."""
    return [
        f"{root}/{dataset}/{model}/{name}{suffix}"
        for dataset, model in runs
        for output in outputs
        for name in stems(output, subsets)
        for suffix in suffixes
    ]


def meta_table_outputs():
    outputs = per_run(TABLES, POINTING_RUNS, ["meta_pointing_table"], TABLE_SUFFIXES)
    if SETTINGS.sensitivity_meta():
        outputs += per_run(
            TABLES, SENSITIVITY_RUNS, ["meta_sensitivity_table"], TABLE_SUFFIXES
        )
    return outputs


def meta_figure_inputs(wildcards):
    inputs = {"meta": f"{EVALUATION}/meta.parquet"}
    if SETTINGS.enabled("sensitivity"):
        inputs["sensitivity"] = f"{EVALUATION}/sensitivity.parquet"
    return inputs


def faithfulness_runs(stage):
    """The runs of a faithfulness check (``sanity``, ``deletion``); none where it is off."""
    return RUNS_OF[stage] if stage in FAITHFULNESS_CHECKS else []


def faithfulness_figure_inputs(wildcards):
    return {stage: f"{EVALUATION}/{stage}.parquet" for stage in FAITHFULNESS_CHECKS}


def qualitative_figures(suffix, dataset, model):
    return [
        f"{FIGURES}/{dataset}/{model}/{stem_of('qualitative_figure', index=k)}{suffix}"
        for k in range(SETTINGS.pointing.examples)
    ]


def map_figures(suffix, dataset, model):
    """The map figures drawn from a pointing run's examples (docs: backsal.report.maps)."""
    root = f"{FIGURES}/{dataset}/{model}"
    count = min(SETTINGS.figures.map_examples, SETTINGS.pointing.examples)
    methods = SETTINGS.pointing.methods
    outputs = []
    if any("/" in m for m in methods):  # the phase-1 x phase-2 grid is computed
        outputs += [
            f"{root}/{stem_of('phase_grid_figure', layer=layer, index=k)}{suffix}"
            for layer in example_grid_layers(model)
            for k in range(count)
        ]
    if combined_methods() and len(example_combination_layers(model)) > 1:
        outputs += [
            f"{root}/{stem_of('combined_figure', index=k)}{suffix}"
            for k in range(count)
        ]
    if SETTINGS.enabled("meta") and SETTINGS.figures.meta_examples:
        layer = meta_maps_layer(model)
        outputs += [
            f"{root}/{stem_of('meta_maps_figure', layer=layer, index=k)}{suffix}"
            for k in range(SETTINGS.figures.meta_examples)
        ]
    return outputs


def example_grid_layers(model):
    """The grid figure's layers that the examples hold (the pointing layers, without the
    combination layers the pointing jobs add)."""
    kept = SETTINGS.layers("pointing", model)
    return [layer for layer in SETTINGS.grid_layers().get(model, []) if layer in kept]


def combined_methods():
    """Methods of the combined-layers figure: the combination's, where the examples hold them."""
    if not SETTINGS.enabled("combination"):
        return []
    return [m for m in SETTINGS.combination.methods if m in SETTINGS.pointing.methods]


def meta_maps_layer(model):
    return meta_maps_layers(SETTINGS.spec(model), model, SETTINGS.meta)[0]


def normgrad_tables(suffixes, dataset, model):
    if not {"norm_grad", "norm_grad_proper"} <= set(SETTINGS.pointing.methods):
        return []
    stem = stem_of("normgrad_identity_table")
    return [f"{TABLES}/{dataset}/{model}/{stem}{suffix}" for suffix in suffixes]


def qualitative_inputs(dataset, model):
    """The example maps a run's map figures are drawn from."""
    inputs = {"examples": f"{RECORDS}/examples/{dataset}/{model}.npz"}
    if SETTINGS.enabled("meta") and SETTINGS.figures.meta_examples:
        inputs["meta_examples"] = f"{RECORDS}/meta_examples/{dataset}/{model}.npz"
    return inputs


def example_combination_layers(model):
    """The combination layers the examples hold, shallow to deep (the combined-layers figure
    combines these)."""
    kept = SETTINGS.layers("pointing", model)
    return [layer for layer in SETTINGS.spec(model).combination_layers if layer in kept]


def combination_layers():
    """Per model, the layers its combination combines (shallow to deep)."""
    return {
        model: list(SETTINGS.spec(model).combination_layers)
        for model in dict.fromkeys(model for _, model in POINTING_RUNS)
    }


def final_outputs():
    outputs = [*merged_tables().values(), f"{RESULTS}/findings.md"]
    outputs += rules.figures_pointing.output
    for stage in ("combination", "sensitivity", "meta", "reference"):
        if SETTINGS.enabled(stage):
            name = (
                f"figures_{stage}" if stage != "reference" else "reference_comparison"
            )
            outputs += getattr(rules, name).output
    if FAITHFULNESS_CHECKS:
        outputs += rules.figures_faithfulness.output
    for dataset, model in POINTING_RUNS:
        outputs += qualitative_figures(".png", dataset, model)
        outputs += map_figures(".png", dataset, model)
        outputs += normgrad_tables([".md"], dataset, model)
    return outputs
