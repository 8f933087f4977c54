# ======================================================================================
# Models: train the offline benchmark's small models; download the published ones.
# ======================================================================================


rule train_model:
    input:
        train=train_input("dataset"),
        test=train_input("test_dataset"),
    output:
        checkpoint=f"{RESOURCES}/models/{{model}}.pt",
        descriptor=f"{RESULTS}/models/{{model}}.json",
    log:
        f"{LOGS}/train_model/{{model}}.log",
    benchmark:
        f"{BENCHMARKS}/train_model/{{model}}.tsv"
    wildcard_constraints:
        model=names_pattern(SETTINGS.models_of_kind("small")),
    conda:
        "../envs/backsal.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=60,
    params:
        entry=lambda wildcards: canonical(config["models"][wildcards.model]),
        settings=lambda wildcards: SETTINGS.train(wildcards.model).params(),
        seed=config["seed"],
    script:
        "../scripts/train_model.py"


rule fetch_model:
    output:
        descriptor=f"{RESULTS}/models/{{model}}.json",
    log:
        f"{LOGS}/fetch_model/{{model}}.log",
    wildcard_constraints:
        model=names_pattern(SETTINGS.models_of_kind("registry")),
    conda:
        "../envs/backsal.yaml"
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        entry=lambda wildcards: canonical(config["models"][wildcards.model]),
    script:
        "../scripts/fetch_model.py"
