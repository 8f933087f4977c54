"""Evaluation table of one (dataset, model) from the records of all its shards."""

import pandas as pd

from backsal.experiments import combination_table, meta_table, pointing_table, sensitivity_table
from backsal.experiments.job import Job
from backsal.provenance import write_parquet

job = Job(snakemake)
with job.logged():
    kind = job.params.kind
    records = pd.concat(
        [pd.read_parquet(path) for path in snakemake.input.records], ignore_index=True
    )
    dataset = job.descriptor("dataset")
    model = job.descriptor("model")
    names = {"dataset": dataset["name"], "model": model["name"], "arch": model["arch"]}
    if kind == "pointing":
        table = pointing_table(records, num_classes=dataset["num_classes"], **names)
    elif kind == "combination":
        source = job.params.weights_from
        table = combination_table(
            records, num_classes=dataset["num_classes"], weights_from=source, **names
        )
    elif kind == "meta":
        table = meta_table(records, num_classes=dataset["num_classes"], **names)
    else:
        table = sensitivity_table(records, **names)
    print(table.to_string())
    write_parquet(table, snakemake.output.table, job.provenance(kind=kind))
