"""Meta-saliency maps of a few images over the lr grid, loss descended and ascended."""

from backsal.experiments import MetaSettings, run_meta_examples
from backsal.experiments.job import Job
from backsal.provenance import atomic_path

job = Job(snakemake)
with job.logged():
    dataset, opened = job.dataset(), job.model()
    settings = MetaSettings.from_params(job.params.settings)
    examples = run_meta_examples(dataset, opened, settings, job.params.images, device=job.device)
    if examples is None:
        raise RuntimeError(f"dataset {snakemake.wildcards.dataset} has no image with a query")
    # the figures are declared before the dataset is read: say so instead of a missing output
    found = examples.images.shape[0]
    if found < job.params.images:
        raise RuntimeError(
            f"dataset {snakemake.wildcards.dataset} has {found} image(s) of one display size "
            f"with a query, fewer than figures.meta_examples = {job.params.images}: lower it"
        )
    with atomic_path(snakemake.output.examples) as tmp, open(tmp, "wb") as handle:
        examples.save(handle)
