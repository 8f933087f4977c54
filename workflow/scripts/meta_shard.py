"""Meta-saliency pointing records of one (dataset, model, shard) over the learning-rate grid."""

from backsal.experiments import run_meta_pointing
from backsal.experiments.job import Job
from backsal.provenance import write_parquet

job = Job(snakemake)
with job.logged():
    dataset, opened = job.dataset(), job.model()
    records = run_meta_pointing(
        dataset,
        opened,
        methods=job.params.methods,
        layers=job.layers(opened, job.params.layers, job.params.input_layer),
        lrs=job.params.lrs,
        steps=job.params.steps,
        strategy=job.params.strategy,
        max_queries=job.params.max_queries,
        shard=int(snakemake.wildcards.shard),
        shards=job.params.shards,
        batch_rows=job.params.batch_rows,
        device=job.device,
        smooth_input=job.params.smooth_input,
        progress=job.progress(),
    )
    write_parquet(records, snakemake.output.records, job.provenance(lrs=list(job.params.lrs)))
