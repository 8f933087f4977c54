"""Deletion / insertion records and evaluation table of one (dataset, model)."""

from backsal.experiments import DeletionSettings, evaluate_deletion, run_deletion
from backsal.experiments.faithfulness import class_probability
from backsal.experiments.job import Job
from backsal.metrics.deletion import BLUR_FRACTION
from backsal.provenance import write_parquet

job = Job(snakemake)
with job.logged():
    settings = DeletionSettings.from_params(job.params.settings)
    dataset, opened = job.dataset(), job.model()
    records = run_deletion(dataset, opened, settings, device=job.device)
    model = job.descriptor("model")
    names = {"dataset": job.descriptor("dataset")["name"], "model": model["name"], "arch": model["arch"]}
    table = evaluate_deletion(records, **names)
    print(table.drop(columns="curve").to_string())
    provenance = job.provenance(
        kind="deletion", probability=class_probability(opened), blur_fraction=BLUR_FRACTION
    )
    write_parquet(records, snakemake.output.records, provenance)
    write_parquet(table, snakemake.output.table, provenance)
