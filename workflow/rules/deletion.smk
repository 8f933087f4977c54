# ======================================================================================
# Deletion and insertion: the class probability as the map's top pixels are removed or
# revealed; one job per (dataset, model), which writes the records and the run's
# evaluation table.
# ======================================================================================


rule deletion:
    input:
        unpack(job_inputs),
    output:
        records=f"{RECORDS}/deletion/{{dataset}}/{{model}}.parquet",
        table=f"{EVALUATION}/deletion/{{dataset}}/{{model}}.parquet",
    log:
        f"{LOGS}/deletion/{{dataset}}/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/deletion/{{dataset}}/{{model}}.tsv"
    conda:
        "../envs/backsal.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        settings=SETTINGS.deletion.params(),
    script:
        "../scripts/deletion.py"
