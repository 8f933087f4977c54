"""Download (and verify) a published model's weights once and describe it."""

from backsal.experiments import open_model
from backsal.experiments.job import Job
from backsal.provenance import write_json

job = Job(snakemake)
with job.logged():
    name = snakemake.wildcards.model
    opened = open_model(name, job.params.entry, job.resources, download=True, **job.sources())
    descriptor = {
        "name": name,
        "entry": dict(job.params.entry),
        "arch": opened.arch,
        "checksum": f"sha256:{opened.checksum}",
        "spec": opened.spec.describe(),
    }
    print(f"{name}: {sum(p.numel() for p in opened.model.parameters())} parameters")
    write_json(descriptor, snakemake.output.descriptor, job.provenance())
