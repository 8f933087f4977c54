"""Layer-combination records of one (dataset, model, backward rule, shard)."""

import json

from backsal.experiments import CombinationSettings, run_combination
from backsal.experiments.job import Job
from backsal.provenance import write_parquet

job = Job(snakemake)
with job.logged():
    settings = CombinationSettings.from_params(job.params.settings)
    dataset, opened = job.dataset(), job.model()
    with open(snakemake.input.weights) as handle:
        weights = json.load(handle)["weights"]
    records = run_combination(
        dataset,
        opened,
        settings,
        accuracy_weights=weights,
        shard=int(snakemake.wildcards.shard),
        device=job.device,
        progress=job.progress(),
    )
    write_parquet(records, snakemake.output.records, job.provenance(methods=list(settings.methods)))
