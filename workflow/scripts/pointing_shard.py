"""Pointing-game records of one (dataset, model, backward rule, shard)."""

from backsal.experiments import PointingSettings, run_pointing
from backsal.experiments.job import Job
from backsal.provenance import write_parquet

job = Job(snakemake)
with job.logged():
    settings = PointingSettings.from_params(job.params.settings)
    dataset, opened = job.dataset(), job.model()
    records, _ = run_pointing(
        dataset,
        opened,
        settings,
        shard=int(snakemake.wildcards.shard),
        # the combination layers' own accuracies weight the combination and are compared to it
        also_layers=opened.spec.combination_layers if job.params.with_combination else (),
        with_center=job.params.with_center,
        device=job.device,
        progress=job.progress(),
    )
    print(f"{len(records)} records")
    write_parquet(records, snakemake.output.records, job.provenance(methods=list(settings.methods)))
