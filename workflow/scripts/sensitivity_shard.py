"""Class-sensitivity records (Spearman rho of c_max vs c_min maps) of one shard."""

from backsal.experiments import SensitivitySettings, run_sensitivity
from backsal.experiments.job import Job
from backsal.provenance import write_parquet

job = Job(snakemake)
with job.logged():
    settings = SensitivitySettings.from_params(job.params.settings)
    dataset, opened = job.dataset(), job.model()
    records = run_sensitivity(
        dataset,
        opened,
        settings,
        shard=int(snakemake.wildcards.shard),
        device=job.device,
        progress=job.progress(),
    )
    write_parquet(records, snakemake.output.records, job.provenance(lrs=list(settings.lrs)))
