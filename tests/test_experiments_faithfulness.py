"""The sanity-check and deletion jobs: records cover every query, method, layer and depth, and
equal the library functions called directly on the same rows."""

import numpy as np
import pytest
import torch

from backsal.data.synthetic import cluttered_digits
from backsal.experiments import DeletionSettings, SanitySettings
from backsal.experiments.faithfulness import (
    class_probability,
    resolve_blocks,
    run_deletion,
    run_sanity,
)
from backsal.experiments.pointing import iter_shard
from backsal.experiments.resources import OpenedModel
from backsal.metrics import deletion_insertion, model_randomisation
from backsal.models import get_spec

METHODS = ["gradient", "norm_grad", "norm_grad_proper"]
LAYERS = ["features.13", "features.20", "input"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return cluttered_digits("test", 6, seed=3, cache_dir=tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def opened():
    spec = get_spec("small_vgg")
    model = spec.build(seed=1).eval()
    return OpenedModel(name="vgg", model=model, spec=spec, checksum="test", arch="small_vgg")


def _first_rows(digits, opened, count):
    batch = next(
        iter_shard(digits, opened, shard=0, shards=1, batch_rows=count, device=torch.device("cpu"))
    )
    return batch.row_images()[:count], batch.targets[:count]


def test_sanity_records(digits, opened):
    blocks = resolve_blocks(opened, "auto", 2)
    assert blocks == ["features.18", "classifier"]
    settings = SanitySettings.from_config(
        {"methods": METHODS, "layers": LAYERS[:-1], "input": True, "max_blocks": 2,
         "max_queries": 3, "batch_rows": 3}
    )  # fmt: skip
    records = run_sanity(digits, opened, settings)
    # norm_grad_proper has no input-level map
    assert len(records) == 3 * 2 * 2 * (len(METHODS) * len(LAYERS) - 1)
    images, targets = _first_rows(digits, opened, 3)
    direct = model_randomisation(
        opened.model, images, targets, ["gradient"], ["features.13"], blocks, "independent"
    )
    got = records.query(
        "randomisation == 'independent' and method == 'gradient' and layer == 'features.13'"
    ).sort_values(["depth", "record", "query"])
    np.testing.assert_allclose(
        got["spearman"].to_numpy(), direct.spearman["gradient"]["features.13"].flatten().numpy(),
        atol=1e-6,
    )  # fmt: skip
    assert got["block"].tolist()[:3] == ["classifier"] * 3


def test_deletion_records(digits, opened):
    settings = DeletionSettings.from_config(
        {"methods": ["gradient"], "layers": [], "input": True, "steps": 4, "max_queries": 3,
         "batch_rows": 3, "baselines": ["zero"]}
    )  # fmt: skip
    records = run_deletion(digits, opened, settings)
    assert len(records) == 3 * 2 and set(records["mode"]) == {"deletion", "insertion"}
    assert class_probability(opened) == "sigmoid"
    images, targets = _first_rows(digits, opened, 3)
    import backsal

    maps = backsal.saliency(opened.model, images, targets, ["gradient"], ["input"], size=(64, 64))
    direct = deletion_insertion(
        opened.model, images, targets, maps, steps=4, baseline="zero", probability="sigmoid"
    )
    deletion = records[records["mode"] == "deletion"]
    np.testing.assert_allclose(
        deletion["auc"].to_numpy(), direct.auc["deletion"]["gradient"]["input"].numpy(), atol=1e-6
    )
    assert np.stack(deletion["curve"].to_list()).shape == (3, 5)
