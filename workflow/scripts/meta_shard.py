"""Meta-saliency pointing records of one (dataset, model, shard) over the learning-rate grid."""

from backsal.experiments import MetaSettings, run_meta_pointing
from backsal.experiments.job import Job
from backsal.provenance import write_parquet

job = Job(snakemake)
with job.logged():
    settings = MetaSettings.from_params(job.params.settings)
    dataset, opened = job.dataset(), job.model()
    records = run_meta_pointing(
        dataset,
        opened,
        settings,
        shard=int(snakemake.wildcards.shard),
        device=job.device,
        progress=job.progress(),
    )
    write_parquet(records, snakemake.output.records, job.provenance(lrs=list(settings.lrs)))
