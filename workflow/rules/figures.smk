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
    output:
        tables=per_run(TABLES, SENSITIVITY_RUNS, ["sensitivity_table"], TABLE_SUFFIXES),
        figures=report(
            per_run(FIGURES, SENSITIVITY_RUNS, ["sensitivity_figure"], [".png"]),
            caption="../report/sensitivity.rst",
            category="Class sensitivity",
        ),
        pdfs=per_run(FIGURES, SENSITIVITY_RUNS, ["sensitivity_figure"], [".pdf"]),
    log:
        notebook=f"{LOGS}/notebooks/figures_sensitivity.ipynb",
    conda:
        "../envs/backsal.yaml"
    params:
        layer_order=LAYER_ORDER,
        method_order=list(SETTINGS.sensitivity.methods),
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


rule figures_qualitative:
    input:
        examples=f"{RECORDS}/examples/{{dataset}}/{{model}}.npz",
    output:
        figures=report(
            qualitative_figures(".png"),
            caption="../report/qualitative.rst",
            category="Qualitative maps",
            subcategory="{dataset} / {model}",
        ),
        pdfs=qualitative_figures(".pdf"),
    log:
        notebook=f"{LOGS}/notebooks/figures_qualitative/{{dataset}}/{{model}}.ipynb",
    conda:
        "../envs/backsal.yaml"
    params:
        layer_order=LAYER_ORDER,
        methods=list(SETTINGS.figures.qualitative_methods) or None,
    notebook:
        "../notebooks/qualitative.py.ipynb"


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
