"""Pointing-game records of one (dataset, model, backward rule, shard)."""

from backsal.experiments import run_pointing
from backsal.experiments.job import Job
from backsal.provenance import write_parquet

job = Job(snakemake)
with job.logged():
    dataset, opened = job.dataset(), job.model()
    records, _ = run_pointing(
        dataset,
        opened,
        methods=job.params.methods,
        layers=job.layers(
            opened, job.params.layers, job.params.input_layer, job.params.with_combination
        ),
        shard=int(snakemake.wildcards.shard),
        shards=job.params.shards,
        batch_rows=job.params.batch_rows,
        device=job.device,
        smooth_input=job.params.smooth_input,
        with_center=job.params.with_center,
        progress=job.progress(),
    )
    print(f"{len(records)} records")
    write_parquet(
        records, snakemake.output.records, job.provenance(methods=list(job.params.methods))
    )
