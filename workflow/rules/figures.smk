# ======================================================================================
# The final rules: the paper's tables (CSV + Markdown + LaTeX) and figures (PDF + PNG),
# rendered from the evaluation tables, never from saliency recomputed. Each figure
# family is a notebook: `snakemake --edit-notebook <file>` restyles it, then rerun that
# rule alone with `snakemake --forcerun <rule>`. File names: backsal.evaluation.OUTPUTS.
# ======================================================================================


FIGURES_POINTING = ["pointing_layers_figure", "grid_figure"]


rule figures_pointing:
    input:
        pointing=f"{EVALUATION}/pointing.parquet",
    output:
        tables=per_run(TABLES, POINTING_RUNS, ["pointing_table"], TABLE_SUFFIXES),
        # the grid figure shows the "all" subset
        figures=report(
            per_run(FIGURES, POINTING_RUNS, FIGURES_POINTING, [".png"], ["all"]),
            caption="../report/pointing.rst",
            category="Pointing game",
        ),
        pdfs=per_run(FIGURES, POINTING_RUNS, FIGURES_POINTING, [".pdf"], ["all"]),
    log:
        notebook=f"{LOGS}/notebooks/figures_pointing.ipynb",
    conda:
        "../envs/backsal.yaml"
    params:
        layer_order=LAYER_ORDER,
        method_order=list(SETTINGS.pointing.methods),
        grid_layers=SETTINGS.grid_layers(),
    notebook:
        "../notebooks/pointing.py.ipynb"


rule figures_combination:
    input:
        combination=f"{EVALUATION}/combination.parquet",
        pointing=f"{EVALUATION}/pointing.parquet",
    output:
        tables=report(
            per_run(TABLES, POINTING_RUNS, ["combination_table"], [".md"]),
            caption="../report/combination.rst",
            category="Layer combination",
        ),
        other=per_run(TABLES, POINTING_RUNS, ["combination_table"], [".csv", ".tex"]),
    log:
        notebook=f"{LOGS}/notebooks/figures_combination.ipynb",
    conda:
        "../envs/backsal.yaml"
    params:
        method_order=list(SETTINGS.combination.methods),
    notebook:
        "../notebooks/combination.py.ipynb"


rule figures_sensitivity:
    input:
        sensitivity=f"{EVALUATION}/sensitivity.parquet",
        # the per-image scatter reads the records themselves, not their summary
        records=[path for _, path in sensitivity_record_files()],
    output:
        tables=per_run(TABLES, SENSITIVITY_RUNS, ["sensitivity_table"], TABLE_SUFFIXES),
        figures=report(
            per_run(FIGURES, SENSITIVITY_RUNS, ["sensitivity_figure"], [".png"]),
            caption="../report/sensitivity.rst",
            category="Class sensitivity",
        ),
        pdfs=per_run(FIGURES, SENSITIVITY_RUNS, ["sensitivity_figure"], [".pdf"]),
        scatter=report(
            per_run(
                FIGURES, SENSITIVITY_RUNS, ["sensitivity_scatter_figure"], [".png"]
            ),
            caption="../report/sensitivity_scatter.rst",
            category="Class sensitivity",
        ),
        scatter_pdfs=per_run(
            FIGURES, SENSITIVITY_RUNS, ["sensitivity_scatter_figure"], [".pdf"]
        ),
    log:
        notebook=f"{LOGS}/notebooks/figures_sensitivity.ipynb",
    conda:
        "../envs/backsal.yaml"
    params:
        layer_order=LAYER_ORDER,
        method_order=list(SETTINGS.sensitivity.methods),
        record_runs=[run for run, _ in sensitivity_record_files()],
        scatter_layers=SETTINGS.scatter_layers(),
    notebook:
        "../notebooks/sensitivity.py.ipynb"


rule figures_meta:
    input:
        unpack(meta_figure_inputs),
    output:
        tables=meta_table_outputs(),
        figures=report(
            per_run(FIGURES, SETTINGS.meta_runs(), ["meta_figure"], [".png"]),
            caption="../report/meta.rst",
            category="Meta-saliency",
        ),
        pdfs=per_run(FIGURES, SETTINGS.meta_runs(), ["meta_figure"], [".pdf"]),
    log:
        notebook=f"{LOGS}/notebooks/figures_meta.ipynb",
    conda:
        "../envs/backsal.yaml"
    params:
        layer_order=LAYER_ORDER,
        method_order=list(SETTINGS.meta.methods),
    notebook:
        "../notebooks/meta.py.ipynb"


# The two faithfulness checks (sanity check, deletion / insertion) in one notebook: one job,
# not one per figure family (each notebook job starts Jupyter and imports the plotting stack).
rule figures_faithfulness:
    input:
        unpack(faithfulness_figure_inputs),
    output:
        sanity_tables=per_run(
            TABLES, faithfulness_runs("sanity"), ["sanity_table"], TABLE_SUFFIXES
        ),
        sanity_figures=report(
            per_run(FIGURES, faithfulness_runs("sanity"), ["sanity_figure"], [".png"]),
            caption="../report/sanity.rst",
            category="Sanity check",
        ),
        sanity_pdfs=per_run(
            FIGURES, faithfulness_runs("sanity"), ["sanity_figure"], [".pdf"]
        ),
        deletion_tables=per_run(
            TABLES, faithfulness_runs("deletion"), ["deletion_table"], TABLE_SUFFIXES
        ),
        deletion_figures=report(
            per_run(
                FIGURES, faithfulness_runs("deletion"), ["deletion_figure"], [".png"]
            ),
            caption="../report/deletion.rst",
            category="Deletion and insertion",
        ),
        deletion_pdfs=per_run(
            FIGURES, faithfulness_runs("deletion"), ["deletion_figure"], [".pdf"]
        ),
    log:
        notebook=f"{LOGS}/notebooks/figures_faithfulness.ipynb",
    conda:
        "../envs/backsal.yaml"
    params:
        layer_order=LAYER_ORDER,
        method_order={
            stage: list(getattr(SETTINGS, stage).methods)
            for stage in ("sanity", "deletion")
        },
    notebook:
        "../notebooks/faithfulness.py.ipynb"


# The figures drawn from a pointing run's examples, in one notebook (one job per run, not one
# per figure family: each notebook job starts Jupyter and imports the plotting stack, about
# 5 s): the qualitative maps (every shown method at every layer), the paper's phase-1 x
# phase-2 grid, the combined layers next to the single ones, meta maps (+L / -L over the lr
# grid) and NormGrad with and without the virtual identity. One rule per run, since the file
# names hold the run's layers.
for _dataset, _model in POINTING_RUNS:

    rule:
        name:
            f"figures_maps_{_dataset}_{_model}"
        input:
            **qualitative_inputs(_dataset, _model),
        output:
            qualitative=report(
                qualitative_figures(".png", _dataset, _model),
                caption="../report/qualitative.rst",
                category="Qualitative maps",
                subcategory=f"{_dataset} / {_model}",
            ),
            qualitative_pdfs=qualitative_figures(".pdf", _dataset, _model),
            maps=report(
                map_figures(".png", _dataset, _model),
                caption="../report/maps.rst",
                category="Map figures",
                subcategory=f"{_dataset} / {_model}",
            ),
            map_pdfs=map_figures(".pdf", _dataset, _model),
            normgrad=report(
                normgrad_tables([".md"], _dataset, _model),
                caption="../report/normgrad_identity.rst",
                category="NormGrad identity",
            ),
            normgrad_other=normgrad_tables([".csv", ".tex"], _dataset, _model),
        log:
            notebook=f"{LOGS}/notebooks/figures_maps/{_dataset}/{_model}.ipynb",
        conda:
            "../envs/backsal.yaml"
        params:
            dataset=_dataset,
            model=_model,
            layer_order=LAYER_ORDER[_model],
            qualitative_methods=list(SETTINGS.figures.qualitative_methods) or None,
            map_examples=min(SETTINGS.figures.map_examples, SETTINGS.pointing.examples),
            grid_layers=example_grid_layers(_model),
            combined_methods=combined_methods(),
            combination_layers=example_combination_layers(_model),
            meta_methods=list(SETTINGS.meta.methods),
        notebook:
            "../notebooks/maps.py.ipynb"


rule findings:
    input:
        unpack(lambda wildcards: merged_tables()),
    output:
        markdown=report(
            f"{RESULTS}/findings.md",
            caption="../report/findings.rst",
            category="Findings",
        ),
        json=f"{RESULTS}/findings.json",
    log:
        f"{LOGS}/findings.log",
    conda:
        "../envs/backsal.yaml"
    params:
        layer_order=LAYER_ORDER,
        combination_layers=combination_layers(),
    script:
        "../scripts/findings.py"


rule reference_comparison:
    input:
        pointing=f"{EVALUATION}/pointing.parquet",
        meta=f"{EVALUATION}/meta.parquet" if SETTINGS.enabled("meta") else [],
    output:
        tables=report(
            [f"{TABLES}/{stem_of('reference_table')}.md"],
            caption="../report/reference.rst",
            category="Reference numbers",
        ),
        other=[
            f"{TABLES}/{stem_of('reference_table')}{suffix}"
            for suffix in (".csv", ".tex")
        ],
    log:
        f"{LOGS}/reference_comparison.log",
    conda:
        "../envs/backsal.yaml"
    script:
        "../scripts/reference_comparison.py"
