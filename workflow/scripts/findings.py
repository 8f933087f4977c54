"""The paper's qualitative findings, tested on our tables with documented criteria."""

from backsal.experiments.job import Job
from backsal.provenance import provenance_from_snakemake, read_parquet
from backsal.report import describe_findings, write_findings

job = Job(snakemake)
with job.logged():
    tables, checksums = {}, {}
    for kind in ("pointing", "sensitivity", "meta", "combination", "sanity"):
        if kind in snakemake.input.keys():
            tables[kind], source = read_parquet(snakemake.input[kind])
            checksums.update(source.get("checksums", {}))
    findings = describe_findings(
        tables["pointing"],
        tables.get("sensitivity"),
        tables.get("meta"),
        job.params.layer_order,
        combination=tables.get("combination"),
        combination_layers=job.params.combination_layers,
        sanity=tables.get("sanity"),
    )
    for finding in findings:
        print(finding)
    provenance = provenance_from_snakemake(snakemake, checksums, {"seed": int(job.config["seed"])})
    stem = str(snakemake.output.markdown).removesuffix(".md")
    write_findings(findings, stem, provenance)
