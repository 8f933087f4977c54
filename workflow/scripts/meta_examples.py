"""Meta-saliency maps of a few images over the lr grid, loss descended and ascended."""

from backsal.experiments import MetaSettings, require_examples, run_meta_examples
from backsal.experiments.job import Job
from backsal.provenance import atomic_path

job = Job(snakemake)
with job.logged():
    dataset, opened = job.dataset(), job.model()
    settings = MetaSettings.from_params(job.params.settings)
    examples = require_examples(
        run_meta_examples(dataset, opened, settings, job.params.images, device=job.device),
        job.params.images,
        "figures.meta_examples",
        snakemake.wildcards.dataset,
    )
    with atomic_path(snakemake.output.examples) as tmp, open(tmp, "wb") as handle:
        examples.save(handle)
