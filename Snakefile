# ======================================================================================
# backsal — "There and Back Again: Revisiting Backpropagation Saliency Methods"
# (Rebuffi, Fong, Ji, Vedaldi, CVPR 2020) as a workflow.
#
#   snakemake --cores all                                   # the offline benchmark
#   snakemake --cores all --configfile config/paper.yaml    # the paper (GPU, downloads)
#
# Stages: data -> models -> saliency (pointing game, combination, meta-saliency)
#         -> class sensitivity, sanity check, deletion/insertion -> evaluation
#         -> tables and figures.
# ======================================================================================

import os
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

# Jobs import backsal from this checkout's src/, whatever runs them: the rules' conda env
# (workflow/envs/backsal.yaml) does not install it. It goes first on PYTHONPATH, declared
# with envvars so that Snakemake passes it to cluster jobs too; inside conda envs Snakemake
# drops PYTHONPATH unless told not to (profiles/default/config.yaml does).
os.environ["PYTHONPATH"] = os.pathsep.join(
    dict.fromkeys(
        [
            f"{workflow.basedir}/src",
            *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)),
        ]
    )
)


envvars:
    "PYTHONPATH",


configfile: "config/config.yaml"


# jsonschema imports rfc3987_syntax where it is installed (Jupyter's jupyter-events needs it),
# which compiles 38 grammars on import: 2 s of every snakemake start and of every cluster job.
# The config schema uses no "iri" format, the one it checks, so this process goes without it.
if "jsonschema" not in sys.modules:
    sys.modules.setdefault("rfc3987_syntax", None)


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/saliency.smk"
include: "workflow/rules/sensitivity.smk"
include: "workflow/rules/sanity.smk"
include: "workflow/rules/deletion.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/figures.smk"


# Run where Snakemake runs, not as cluster jobs: downloads (login nodes have the network that
# compute nodes often lack), bookkeeping and figure rendering (seconds each).
localrules:
    all,
    prepare_dataset,
    fetch_model,
    evaluate_pointing,
    evaluate_combination,
    evaluate_meta,
    evaluate_sensitivity,
    merge_evaluation,
    layer_weights,
    figures_pointing,
    figures_combination,
    figures_sensitivity,
    figures_meta,
    figures_faithfulness,
    findings,
    reference_comparison,


rule all:
    default_target: True
    input:
        final_outputs(),
