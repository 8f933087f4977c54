# ======================================================================================
# Evaluation: records of all shards -> evaluation tables per (dataset, model), then one
# table per kind across runs (what the figures and tables are rendered from).
# ======================================================================================


rule evaluate_pointing:
    input:
        unpack(job_inputs),
        records=lambda wildcards: shard_records(
            "pointing", wildcards, pointing_groups(wildcards)
        ),
    output:
        table=f"{EVALUATION}/pointing/{{dataset}}/{{model}}.parquet",
    log:
        f"{LOGS}/evaluate/pointing/{{dataset}}/{{model}}.log",
    conda:
        "../envs/backsal.yaml"
    params:
        kind="pointing",
    script:
        "../scripts/evaluate.py"


rule evaluate_combination:
    input:
        unpack(job_inputs),
        records=lambda wildcards: shard_records(
            "combination", wildcards, combination_groups()
        ),
    output:
        table=f"{EVALUATION}/combination/{{dataset}}/{{model}}.parquet",
    log:
        f"{LOGS}/evaluate/combination/{{dataset}}/{{model}}.log",
    conda:
        "../envs/backsal.yaml"
    params:
        kind="combination",
        weights_from=SETTINGS.combination.weights_from,
    script:
        "../scripts/evaluate.py"


rule evaluate_meta:
    input:
        unpack(job_inputs),
        records=lambda wildcards: shard_records("meta", wildcards),
    output:
        table=f"{EVALUATION}/meta/{{dataset}}/{{model}}.parquet",
    log:
        f"{LOGS}/evaluate/meta/{{dataset}}/{{model}}.log",
    conda:
        "../envs/backsal.yaml"
    params:
        kind="meta",
    script:
        "../scripts/evaluate.py"


rule evaluate_sensitivity:
    input:
        unpack(job_inputs),
        records=lambda wildcards: shard_records("sensitivity", wildcards),
    output:
        table=f"{EVALUATION}/sensitivity/{{dataset}}/{{model}}.parquet",
    log:
        f"{LOGS}/evaluate/sensitivity/{{dataset}}/{{model}}.log",
    conda:
        "../envs/backsal.yaml"
    params:
        kind="sensitivity",
    script:
        "../scripts/evaluate.py"


rule merge_evaluation:
    input:
        tables=lambda wildcards: evaluation_tables(wildcards.kind),
    output:
        table=f"{EVALUATION}/{{kind}}.parquet",
    log:
        f"{LOGS}/evaluate/merge_{{kind}}.log",
    wildcard_constraints:
        kind=names_pattern(KINDS),
    conda:
        "../envs/backsal.yaml"
    script:
        "../scripts/merge_tables.py"
