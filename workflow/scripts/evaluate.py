"""Evaluation table of one (dataset, model) from the records of all its shards."""

import pandas as pd

from backsal.experiments import (
    evaluate_combination,
    evaluate_meta,
    evaluate_pointing,
    evaluate_sensitivity,
)
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
        table = evaluate_pointing(records, num_classes=dataset["num_classes"], **names)
    elif kind == "combination":
        table = evaluate_combination(
            records,
            num_classes=dataset["num_classes"],
            weights_from=job.params.weights_from,
            **names,
        )
    elif kind == "meta":
        table = evaluate_meta(records, num_classes=dataset["num_classes"], **names)
    else:
        table = evaluate_sensitivity(records, **names)
    print(table.to_string())
    write_parquet(table, snakemake.output.table, job.provenance(kind=kind))
