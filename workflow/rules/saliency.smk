# ======================================================================================
# Saliency and the pointing game: one job per (dataset, model, backward rule, shard) for
# the per-layer maps and for the layer combinations, one per (dataset, model, shard) for
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
        methods=lambda wildcards: methods_of(
            pointing_methods(wildcards), wildcards.backward
        ),
        layers=layers_setting("pointing"),
        # the combination layers' own accuracies weight the combination and are compared to it
        with_combination=combining(),
        input_layer=config["pointing"]["input"],
        smooth_input=config["pointing"]["smooth_input"],
        shards=config["pointing"]["shards"],
        batch_rows=config["pointing"]["batch_rows"],
        with_center=with_center,
        device=config["device"],
        seed=config["seed"],
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
        methods=config["pointing"]["methods"],
        layers=layers_setting("pointing"),
        input_layer=config["pointing"]["input"],
        examples=config["pointing"]["examples"],
        device=config["device"],
    script:
        "../scripts/pointing_examples.py"


if combining():

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
            weights_from=config["combination"]["weights_from"],
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
            methods=lambda wildcards: methods_of(
                config["combination"]["methods"], wildcards.backward
            ),
            strategies=config["combination"]["strategies"],
            modes=config["combination"]["modes"],
            shards=config["pointing"]["shards"],
            batch_rows=config["pointing"]["batch_rows"],
            device=config["device"],
            seed=config["seed"],
        script:
            "../scripts/combination_shard.py"


if section("meta") and config["meta"]["methods"]:

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
            methods=config["meta"]["methods"],
            layers=layers_setting("meta"),
            input_layer=config["meta"]["input"],
            lrs=config["meta"]["lrs"],
            steps=config["meta"]["steps"],
            strategy=config["meta"]["strategy"],
            max_queries=config["meta"]["max_queries"],
            shards=config["meta"]["shards"],
            batch_rows=config["meta"]["batch_rows"],
            smooth_input=config["pointing"]["smooth_input"],
            device=config["device"],
            seed=config["seed"],
        script:
            "../scripts/meta_shard.py"
