"""Per-layer pointing accuracies that weight the layer combination (pointing_accuracy)."""

from backsal.experiments import layer_accuracies
from backsal.experiments.job import Job
from backsal.provenance import read_parquet, write_json

job = Job(snakemake)
with job.logged():
    table, source = read_parquet(snakemake.input.pointing)
    weights = layer_accuracies(table)
    payload = {"weights_from": job.params.weights_from, "weights": weights}
    write_json(
        payload, snakemake.output.weights, job.provenance(source=source.get("checksums", {}))
    )
