"""The rehearsal's overlay and Snakemake environment, without running the rehearsal.

The run itself is tests/test_rehearsal.py (slow); these checks are the cheap part of its
contract: the ``ci`` scope leaves the paper DAG's set of rules whole, and the jobs find the
environment's own tools.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from backsal import rehearsal
from backsal.data.standins import StandIns
from backsal.rehearsal import (
    CI_POINTING_METHODS,
    MIRRORED_MODEL,
    REPOSITORY,
    dry_run_rules,
    overlay,
    snakemake_environment,
)

_MODELS = ("vgg16_voc07", "vgg16_coco14", "resnet50_voc07", "resnet50_coco14",
           "vgg16_imagenet", "resnet50_imagenet")  # fmt: skip


def _standins(root: Path) -> StandIns:
    # a dry run reads no file: paths that would be the stand-ins' are enough
    return StandIns(
        root=root,
        voc07=root / "voc07" / "VOCdevkit",
        coco14=root / "coco14",
        imagenet=root / "imagenet",
        checkpoints={name: root / "checkpoints" / f"{name}.pth" for name in _MODELS},
        checksums={f"{name}.pth": "0" * 64 for name in _MODELS},
    )


def test_jobs_find_this_environments_tools(monkeypatch):
    # the figure rules run jupyter-nbconvert: `.venv/bin/python -m backsal.rehearsal` without
    # an activated environment failed them with exit status 127
    monkeypatch.setenv("PATH", "/usr/bin")
    path = snakemake_environment()["PATH"].split(os.pathsep)
    assert path[0] == str(Path(sys.executable).parent)
    assert path[1:] == ["/usr/bin"]


def test_ci_scope_caps_methods_and_layers(tmp_path):
    config = overlay(_standins(tmp_path), tmp_path, "http://127.0.0.1:1", scope="ci")
    assert config["pointing"]["methods"] == list(CI_POINTING_METHODS)
    assert all(len(layers) == 2 for layers in config["pointing"]["layers"].values())
    assert MIRRORED_MODEL not in config["models"]  # fetched through the mirror
    paper = overlay(_standins(tmp_path), tmp_path, "http://127.0.0.1:1")
    assert "methods" not in paper["pointing"]  # the paper scope keeps every method


@pytest.mark.slow
def test_ci_scope_keeps_every_rule_of_the_paper_dag(tmp_path):
    import yaml

    config = overlay(_standins(tmp_path), tmp_path, "http://127.0.0.1:1", scope="ci")
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(config))
    paper = REPOSITORY / "config" / "paper.yaml"
    assert dry_run_rules([paper, path]) == dry_run_rules([paper])


def test_make_rehearsal_reports_an_up_to_date_rerun_as_success(monkeypatch, capsys, tmp_path):
    def finished(root, **_):
        return rehearsal.RehearsalRun(
            planned={"all", "pointing_shard"}, executed=set(), returncode=0,
            log="Building DAG of jobs...\nNothing to be done (all requested files are present)",
        )  # fmt: skip

    monkeypatch.setattr(rehearsal, "rehearse", finished)
    assert rehearsal.main(["--root", str(tmp_path)]) == 0
    assert "up to date" in capsys.readouterr().out

    def stopped(root, **_):  # a run that ended without running every rule is a failure
        return rehearsal.RehearsalRun(
            planned={"all", "pointing_shard"}, executed={"pointing_shard"}, returncode=0, log=""
        )

    monkeypatch.setattr(rehearsal, "rehearse", stopped)
    assert rehearsal.main(["--root", str(tmp_path)]) == 1  # a fresh rehearsal must run them all
    assert "rules that did not run: all" in capsys.readouterr().out
    (tmp_path / "results").mkdir()  # after a config change, what is still up to date is kept
    assert rehearsal.main(["--root", str(tmp_path)]) == 0
    assert "rules up to date from the earlier rehearsal: all" in capsys.readouterr().out
