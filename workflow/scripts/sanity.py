"""Model-randomisation sanity-check records and evaluation table of one (dataset, model)."""

from backsal.experiments import SanitySettings, evaluate_sanity, run_sanity
from backsal.experiments.job import Job
from backsal.provenance import write_parquet

job = Job(snakemake)
with job.logged():
    settings = SanitySettings.from_params(job.params.settings)
    dataset, opened = job.dataset(), job.model()
    records = run_sanity(dataset, opened, settings, device=job.device)
    model = job.descriptor("model")
    names = {"dataset": job.descriptor("dataset")["name"], "model": model["name"], "arch": model["arch"]}
    table = evaluate_sanity(records, **names)
    print(table.to_string())
    seeds = {"randomisation_seed": settings.randomisation_seed}
    provenance = job.provenance(kind="sanity", randomisation="gaussian, each tensor's mean and std", **seeds)
    write_parquet(records, snakemake.output.records, provenance)
    write_parquet(table, snakemake.output.table, provenance)
