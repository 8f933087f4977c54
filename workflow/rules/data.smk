# ======================================================================================
# Data: download (VOC07, COCO14, TorchRay's flag files), locate (ImageNet) or generate
# (cluttered digits) each dataset once; every later job opens it offline.
# ======================================================================================


rule prepare_dataset:
    output:
        descriptor=f"{RESULTS}/datasets/{{dataset}}.json",
    log:
        f"{LOGS}/prepare_dataset/{{dataset}}.log",
    wildcard_constraints:
        dataset=names_pattern(config["datasets"]),
    conda:
        "../envs/backsal.yaml"
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        entry=lambda wildcards: canonical(config["datasets"][wildcards.dataset]),
    script:
        "../scripts/prepare_dataset.py"
