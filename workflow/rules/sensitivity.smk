# ======================================================================================
# Class sensitivity: Spearman correlation of the maps of the most and least likely
# class, plain and after the meta step; one job per (dataset, model, shard).
# ======================================================================================


rule sensitivity_shard:
    input:
        unpack(job_inputs),
    output:
        records=f"{RECORDS}/sensitivity/{{dataset}}/{{model}}/shard-{{shard}}.parquet",
    log:
        f"{LOGS}/sensitivity/{{dataset}}/{{model}}/shard-{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/sensitivity/{{dataset}}/{{model}}/shard-{{shard}}.tsv"
    conda:
        "../envs/backsal.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 240 * attempt,
    params:
        settings=SETTINGS.sensitivity.params(),
    script:
        "../scripts/sensitivity_shard.py"
