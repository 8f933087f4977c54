"""Class-sensitivity records (Spearman rho of c_max vs c_min maps) of one shard."""

from backsal.experiments import run_sensitivity
from backsal.experiments.job import Job
from backsal.provenance import write_parquet

job = Job(snakemake)
with job.logged():
    dataset, opened = job.dataset(), job.model()
    records = run_sensitivity(
        dataset,
        opened,
        methods=job.params.methods,
        layers=job.layers(opened, job.params.layers, job.params.input_layer),
        lrs=job.params.lrs,
        strategy=job.params.strategy,
        max_images=job.params.max_images,
        shard=int(snakemake.wildcards.shard),
        shards=job.params.shards,
        batch_images=job.params.batch_images,
        device=job.device,
        progress=job.progress(),
    )
    write_parquet(records, snakemake.output.records, job.provenance(lrs=list(job.params.lrs)))
