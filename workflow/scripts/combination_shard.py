"""Layer-combination records of one (dataset, model, backward rule, shard)."""

import json

from backsal.experiments import run_combination
from backsal.experiments.job import Job
from backsal.report.provenance import write_parquet

job = Job(snakemake)  # noqa: F821 - injected by Snakemake
with job.logged():
    dataset, opened = job.dataset(), job.model()
    weights = json.loads(open(snakemake.input.weights).read())["weights"]  # noqa: F821
    records = run_combination(
        dataset,
        opened,
        methods=job.params.methods,
        layers=list(opened.spec.combination_layers),
        strategies=job.params.strategies,
        modes=job.params.modes,
        accuracy_weights=weights,
        shard=int(snakemake.wildcards.shard),  # noqa: F821
        shards=job.params.shards,
        batch_rows=job.params.batch_rows,
        device=job.device,
        progress=job.progress(),
    )
    write_parquet(records, snakemake.output.records, job.provenance(methods=list(job.params.methods)))  # noqa: F821
