"""Layer-combination records of one (dataset, model, backward rule, shard)."""

import json

from backsal.experiments import run_combination
from backsal.experiments.job import Job
from backsal.provenance import write_parquet

job = Job(snakemake)
with job.logged():
    dataset, opened = job.dataset(), job.model()
    with open(snakemake.input.weights) as handle:
        weights = json.load(handle)["weights"]
    records = run_combination(
        dataset,
        opened,
        methods=job.params.methods,
        layers=list(opened.spec.combination_layers),
        strategies=job.params.strategies,
        modes=job.params.modes,
        accuracy_weights=weights,
        shard=int(snakemake.wildcards.shard),
        shards=job.params.shards,
        batch_rows=job.params.batch_rows,
        device=job.device,
        progress=job.progress(),
    )
    write_parquet(
        records, snakemake.output.records, job.provenance(methods=list(job.params.methods))
    )
