"""Maps of a few images for the qualitative figures (every method, every layer)."""

import numpy as np

from backsal.experiments import run_examples
from backsal.experiments.job import Job
from backsal.provenance import atomic_path

job = Job(snakemake)
with job.logged():
    dataset, opened = job.dataset(), job.model()
    examples = run_examples(
        dataset,
        opened,
        methods=job.params.methods,
        layers=job.layers(opened, job.params.layers, job.params.input_layer),
        count=job.params.examples,
        device=job.device,
    )
    if examples is None:
        raise RuntimeError(f"dataset {snakemake.wildcards.dataset} has no image with a query")
    arrays = {
        "images": examples.images,
        "targets": examples.targets,
        "image_ids": np.array(examples.image_ids),
        "class_names": np.array(getattr(dataset, "class_names", ())),
    }
    for (method, layer), values in examples.maps.items():
        arrays[f"map__{method.replace('/', '-')}__{layer}"] = values
    # a file object: given a path, numpy would append .npz to the temporary name
    with atomic_path(snakemake.output.examples) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
