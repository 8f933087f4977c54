"""Download, locate or generate a dataset once and describe it (counts, checksum)."""

from backsal.experiments import dataset_checksum, open_dataset
from backsal.experiments.job import Job
from backsal.provenance import write_json

job = Job(snakemake)
with job.logged():
    name = snakemake.wildcards.dataset
    dataset = open_dataset(name, job.params.entry, job.resources, download=True, **job.sources())
    records = getattr(dataset, "records", None)
    descriptor = {
        "name": name,
        "entry": dict(job.params.entry),
        "checksum": f"sha256:{dataset_checksum(dataset)}",
        "images": len(dataset),
        "queries": sum(len(r.queries) for r in records) if records is not None else None,
        "num_classes": getattr(dataset, "num_classes", None),
        "class_names": list(getattr(dataset, "class_names", ()) or ()),
        "pointing_tolerance": getattr(dataset, "pointing_tolerance", None),
        "expected_images": getattr(dataset, "expected_images", None),
    }
    print(f"{name}: {descriptor['images']} images, {descriptor['queries']} queries")
    if descriptor["expected_images"] not in (None, descriptor["images"]):
        print(f"{name}: NOTE the official split has {descriptor['expected_images']} images")
    write_json(descriptor, snakemake.output.descriptor, job.provenance())
