"""One evaluation table per kind across all (dataset, model) runs."""

import pandas as pd

from backsal.experiments.job import Job
from backsal.provenance import (
    provenance_from_snakemake,
    read_parquet_provenance,
    write_parquet,
)

job = Job(snakemake)
with job.logged():
    tables = [pd.read_parquet(path) for path in snakemake.input.tables]
    merged = pd.concat(tables, ignore_index=True)
    checksums = {}
    for path in snakemake.input.tables:
        checksums.update(read_parquet_provenance(path).get("checksums", {}))
    provenance = provenance_from_snakemake(snakemake, checksums, {"seed": int(job.config["seed"])})
    write_parquet(merged, snakemake.output.table, provenance)
