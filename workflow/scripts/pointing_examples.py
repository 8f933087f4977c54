"""Maps of a few images for the qualitative figures (every method, every layer)."""

from backsal.experiments import PointingSettings, require_examples, run_examples
from backsal.experiments.job import Job
from backsal.provenance import atomic_path

job = Job(snakemake)
with job.logged():
    dataset, opened = job.dataset(), job.model()
    settings = PointingSettings.from_params(job.params.settings)
    examples = require_examples(
        run_examples(dataset, opened, settings, device=job.device),
        settings.examples,
        "pointing.examples",
        snakemake.wildcards.dataset,
    )
    with atomic_path(snakemake.output.examples) as tmp, open(tmp, "wb") as handle:
        examples.save(handle)
