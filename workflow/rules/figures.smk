# ======================================================================================
# The final rules: the paper's tables (CSV + Markdown + LaTeX) and figures (PDF + PNG),
# rendered from the evaluation tables, never from saliency recomputed. Each figure
# family is a notebook: `snakemake --edit-notebook <file>` restyles it, then rerun that
# rule alone with `snakemake --forcerun <rule>`.
# ======================================================================================

TABLES = f"{RESULTS}/tables"
FIGURES = f"{RESULTS}/figures"


rule figures_pointing:
    input:
        pointing=f"{EVALUATION}/pointing.parquet",
    output:
        tables=expand_runs(
            TABLES,
            pointing_runs(),
            ["pointing_all", "pointing_difficult"],
            TABLE_SUFFIXES,
        ),
        figures=report(
            expand_runs(
                FIGURES, pointing_runs(), ["pointing_layers", "grid_all"], ["png"]
            ),
            caption="../report/pointing.rst",
            category="Pointing game",
        ),
        pdfs=expand_runs(
            FIGURES, pointing_runs(), ["pointing_layers", "grid_all"], ["pdf"]
        ),
    log:
        notebook=f"{LOGS}/notebooks/figures_pointing.ipynb",
    conda:
        "../envs/backsal.yaml"
    params:
        layer_order=layer_order(),
        method_order=config["pointing"]["methods"],
    notebook:
        "../notebooks/pointing.py.ipynb"


if "combination" in merged_tables():

    rule figures_combination:
        input:
            combination=f"{EVALUATION}/combination.parquet",
            pointing=f"{EVALUATION}/pointing.parquet",
        output:
            tables=report(
                expand_runs(
                    TABLES,
                    pointing_runs(),
                    ["combination_all", "combination_difficult"],
                    ["md"],
                ),
                caption="../report/combination.rst",
                category="Layer combination",
            ),
            other=expand_runs(
                TABLES,
                pointing_runs(),
                ["combination_all", "combination_difficult"],
                ["csv", "tex"],
            ),
        log:
            notebook=f"{LOGS}/notebooks/figures_combination.ipynb",
        conda:
            "../envs/backsal.yaml"
        params:
            method_order=config["combination"]["methods"],
        notebook:
            "../notebooks/combination.py.ipynb"


if "sensitivity" in merged_tables():

    rule figures_sensitivity:
        input:
            sensitivity=f"{EVALUATION}/sensitivity.parquet",
        output:
            tables=expand_runs(
                TABLES, sensitivity_runs(), ["sensitivity"], TABLE_SUFFIXES
            ),
            figures=report(
                expand_runs(
                    FIGURES, sensitivity_runs(), ["sensitivity_layers"], ["png"]
                ),
                caption="../report/sensitivity.rst",
                category="Class sensitivity",
            ),
            pdfs=expand_runs(
                FIGURES, sensitivity_runs(), ["sensitivity_layers"], ["pdf"]
            ),
        log:
            notebook=f"{LOGS}/notebooks/figures_sensitivity.ipynb",
        conda:
            "../envs/backsal.yaml"
        params:
            layer_order=layer_order(),
            method_order=config["sensitivity"]["methods"],
        notebook:
            "../notebooks/sensitivity.py.ipynb"


if "meta" in merged_tables():

    rule figures_meta:
        input:
            unpack(meta_figure_inputs),
        output:
            tables=meta_table_outputs(TABLES),
            figures=report(
                expand_runs(FIGURES, meta_runs(), ["meta"], ["png"]),
                caption="../report/meta.rst",
                category="Meta-saliency",
            ),
            pdfs=expand_runs(FIGURES, meta_runs(), ["meta"], ["pdf"]),
        log:
            notebook=f"{LOGS}/notebooks/figures_meta.ipynb",
        conda:
            "../envs/backsal.yaml"
        params:
            layer_order=layer_order(),
            method_order=config["meta"]["methods"],
        notebook:
            "../notebooks/meta.py.ipynb"


rule figures_qualitative:
    input:
        examples=f"{RECORDS}/examples/{{dataset}}/{{model}}.npz",
    output:
        figures=report(
            expand(
                f"{FIGURES}/{{{{dataset}}}}/{{{{model}}}}/qualitative_{{k:03d}}.png",
                k=range(config["pointing"]["examples"]),
            ),
            caption="../report/qualitative.rst",
            category="Qualitative maps",
            subcategory="{dataset} / {model}",
        ),
        pdfs=expand(
            f"{FIGURES}/{{{{dataset}}}}/{{{{model}}}}/qualitative_{{k:03d}}.pdf",
            k=range(config["pointing"]["examples"]),
        ),
    log:
        notebook=f"{LOGS}/notebooks/figures_qualitative/{{dataset}}/{{model}}.ipynb",
    conda:
        "../envs/backsal.yaml"
    params:
        layer_order=layer_order(),
        methods=config["figures"]["qualitative_methods"] or None,
    notebook:
        "../notebooks/qualitative.py.ipynb"


rule findings:
    input:
        unpack(findings_inputs),
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
        layer_order=layer_order(),
    script:
        "../scripts/findings.py"


if config["figures"]["reference"]:

    rule reference_comparison:
        input:
            pointing=f"{EVALUATION}/pointing.parquet",
            meta=f"{EVALUATION}/meta.parquet" if "meta" in merged_tables() else [],
        output:
            tables=report(
                expand(f"{TABLES}/reference_comparison.{{suffix}}", suffix=["md"]),
                caption="../report/reference.rst",
                category="Reference numbers",
            ),
            other=expand(
                f"{TABLES}/reference_comparison.{{suffix}}", suffix=["csv", "tex"]
            ),
        log:
            f"{LOGS}/reference_comparison.log",
        conda:
            "../envs/backsal.yaml"
        script:
            "../scripts/reference_comparison.py"
