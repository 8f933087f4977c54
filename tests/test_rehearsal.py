"""The rehearsal: config/paper.yaml through its whole DAG on stand-ins, then a rerun does nothing.

Opt-in: `BACKSAL_REHEARSAL=1 pytest tests/test_rehearsal.py`.

Real architectures (VGG16, ResNet50) on the CPU: this is the slowest test of the suite, so it
runs the smallest rehearsal (two images per pointing dataset, one ImageNet image).
"""

from __future__ import annotations

import csv
import math
import os

import pytest

from backsal.rehearsal import REPOSITORY, rehearse, run_snakemake


# The whole paper DAG on real architectures takes longer on 2 CPU cores than the rest of the
# suite together, so the routine run (`make test`, CI) leaves it to `make rehearsal` and to
# runs that ask for it.
@pytest.mark.skipif(
    os.environ.get("BACKSAL_REHEARSAL") != "1",
    reason="the paper rehearsal: set BACKSAL_REHEARSAL=1 (or run `make rehearsal`)",
)
@pytest.mark.slow
def test_rehearsal_runs_every_rule_of_the_paper_dag(tmp_path):
    run = rehearse(tmp_path, images=2, cores=2)
    assert run.returncode == 0, run.log[-6000:]
    paper_rules = set(_dry_run_rules_of_paper())
    assert run.planned == paper_rules  # the overlay removes no rule
    assert run.executed == run.planned, sorted(run.planned - run.executed)
    tables = sorted((tmp_path / "results" / "tables").rglob("*.csv"))
    assert tables, "no table was written"
    for table in tables:
        with table.open() as handle:
            rows = list(csv.DictReader(handle))
        assert rows, table
        numeric = [
            value for row in rows for key, value in row.items() if key and _numeric_column(key)
        ]
        assert numeric and all(_is_number(v) for v in numeric), table
    again = run_snakemake(["-n", "--configfile", str(REPOSITORY / "config/paper.yaml"),
                        str(tmp_path / "overlay.yaml")])  # fmt: skip
    assert "Nothing to be done" in again.stdout + again.stderr


def _dry_run_rules_of_paper() -> set[str]:
    from backsal.rehearsal import dry_run_rules

    return dry_run_rules([REPOSITORY / "config" / "paper.yaml"])


def _numeric_column(name: str) -> bool:
    return any(word in name.lower() for word in ("accuracy", "mean", "rho", "%"))


def _is_number(value: str) -> bool:
    try:
        return not math.isnan(float(value.rstrip("%")))
    except ValueError:
        return value.strip() == "n/a"
