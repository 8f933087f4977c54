"""Our pointing accuracies next to the reference numbers (pointing_reference.csv)."""

from pathlib import Path

from backsal.experiments.job import Job
from backsal.provenance import provenance_from_snakemake, read_parquet
from backsal.report import reference_comparison

job = Job(snakemake)
with job.logged():
    pointing, source = read_parquet(snakemake.input.pointing)
    checksums = dict(source.get("checksums", {}))
    meta = None
    if snakemake.input.meta:
        meta, meta_source = read_parquet(snakemake.input.meta)
        checksums.update(meta_source.get("checksums", {}))
    provenance = provenance_from_snakemake(snakemake, checksums, {"seed": int(job.config["seed"])})
    reference_comparison(
        pointing, meta, Path(snakemake.output.tables[0]).parent, provenance=provenance
    )
