# ======================================================================================
# Model-randomisation sanity check: maps of the trained model against maps with its top
# blocks (cascading) or one block (independent) randomised; one job per (dataset, model),
# which writes the records and the run's evaluation table.
# ======================================================================================


rule sanity:
    input:
        unpack(job_inputs),
    output:
        records=f"{RECORDS}/sanity/{{dataset}}/{{model}}.parquet",
        table=f"{EVALUATION}/sanity/{{dataset}}/{{model}}.parquet",
    log:
        f"{LOGS}/sanity/{{dataset}}/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/sanity/{{dataset}}/{{model}}.tsv"
    conda:
        "../envs/backsal.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        settings=SETTINGS.sanity.params(),
    script:
        "../scripts/sanity.py"
