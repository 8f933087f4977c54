"""Maps of a few images for the qualitative figures (every method, every layer)."""

from backsal.experiments import PointingSettings, run_examples
from backsal.experiments.job import Job
from backsal.provenance import atomic_path

job = Job(snakemake)
with job.logged():
    dataset, opened = job.dataset(), job.model()
    settings = PointingSettings.from_params(job.params.settings)
    examples = run_examples(dataset, opened, settings, device=job.device)
    if examples is None:
        raise RuntimeError(f"dataset {snakemake.wildcards.dataset} has no image with a query")
    # the figures are declared before the dataset is read: say so instead of a missing output
    found = examples.images.shape[0]
    if found < settings.examples:
        raise RuntimeError(
            f"dataset {snakemake.wildcards.dataset} has {found} image(s) of one display size "
            f"with a query, fewer than pointing.examples = {settings.examples}: lower it"
        )
    with atomic_path(snakemake.output.examples) as tmp, open(tmp, "wb") as handle:
        examples.save(handle)
