# ======================================================================================
# Saliency and the pointing game: one job per (dataset, model, backward rule, shard) for
# the per-layer maps and for the layer combinations (one per (dataset, model, shard) for all
# rules at once with `split_rules: false`), one per (dataset, model, shard) for
# meta-saliency. Jobs write compact per-query records, never full maps.
# ======================================================================================


rule pointing_shard:
    input:
        unpack(job_inputs),
    output:
        records=f"{RECORDS}/pointing/{{dataset}}/{{model}}/{{backward}}/shard-{{shard}}.parquet",
    log:
        f"{LOGS}/pointing/{{dataset}}/{{model}}/{{backward}}/shard-{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/pointing/{{dataset}}/{{model}}/{{backward}}/shard-{{shard}}.tsv"
    conda:
        "../envs/backsal.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=lambda wildcards, attempt: 6000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        # this job's methods only: a method of another backward rule reruns nothing here
        settings=lambda wildcards: SETTINGS.pointing.params(
            methods=methods_of_group(
                SETTINGS.pointing_methods(wildcards.dataset, wildcards.model),
                wildcards.backward,
            ),
            examples=0,
        ),
        with_combination=SETTINGS.enabled("combination"),
        # the first rule job of a shard also records the center baseline
        with_center=is_first_pointing_group,
    script:
        "../scripts/pointing_shard.py"


rule pointing_examples:
    input:
        unpack(job_inputs),
    output:
        examples=f"{RECORDS}/examples/{{dataset}}/{{model}}.npz",
    log:
        f"{LOGS}/examples/{{dataset}}/{{model}}.log",
    conda:
        "../envs/backsal.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=lambda wildcards, attempt: 6000 * attempt,
        runtime=30,
    params:
        settings=SETTINGS.pointing.params(),
    script:
        "../scripts/pointing_examples.py"


rule meta_examples:
    input:
        unpack(job_inputs),
    output:
        examples=f"{RECORDS}/meta_examples/{{dataset}}/{{model}}.npz",
    log:
        f"{LOGS}/meta_examples/{{dataset}}/{{model}}.log",
    conda:
        "../envs/backsal.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=lambda wildcards, attempt: 6000 * attempt,
        runtime=30,
    params:
        settings=SETTINGS.meta.params(),
        images=SETTINGS.figures.meta_examples,
    script:
        "../scripts/meta_examples.py"


rule layer_weights:
    input:
        pointing=combination_weights_input,
    output:
        weights=f"{RECORDS}/combination/{{dataset}}/{{model}}/weights.json",
    log:
        f"{LOGS}/combination/{{dataset}}/{{model}}/weights.log",
    conda:
        "../envs/backsal.yaml"
    params:
        weights_from=SETTINGS.combination.weights_from,
    script:
        "../scripts/layer_weights.py"


rule combination_shard:
    input:
        unpack(job_inputs),
        weights=f"{RECORDS}/combination/{{dataset}}/{{model}}/weights.json",
    output:
        records=f"{RECORDS}/combination/{{dataset}}/{{model}}/{{backward}}/shard-{{shard}}.parquet",
    log:
        f"{LOGS}/combination/{{dataset}}/{{model}}/{{backward}}/shard-{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/combination/{{dataset}}/{{model}}/{{backward}}/shard-{{shard}}.tsv"
    conda:
        "../envs/backsal.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=lambda wildcards, attempt: 6000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        settings=lambda wildcards: SETTINGS.combination.params(
            methods=methods_of_group(SETTINGS.combination.methods, wildcards.backward)
        ),
    script:
        "../scripts/combination_shard.py"


rule meta_shard:
    input:
        unpack(job_inputs),
    output:
        records=f"{RECORDS}/meta/{{dataset}}/{{model}}/shard-{{shard}}.parquet",
    log:
        f"{LOGS}/meta/{{dataset}}/{{model}}/shard-{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/meta/{{dataset}}/{{model}}/shard-{{shard}}.tsv"
    conda:
        "../envs/backsal.yaml"
    threads: 1
    resources:
        gpu=GPU,
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 240 * attempt,
    params:
        settings=SETTINGS.meta.params(),
    script:
        "../scripts/meta_shard.py"
