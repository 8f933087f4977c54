"""The rehearsal: config/paper.yaml through its whole DAG on stand-ins, killed and resumed.

Part of `make test` (and so of CI); `pytest -m "not slow"` leaves it out.

One rehearsal (the ``ci`` scope: a few methods per stage, two images per pointing dataset) is
run once for the module, the way a user's run goes wrong: Snakemake is stopped (SIGINT, as
Ctrl-C stops it, killing the running jobs) as soon as the first pointing shard has finished,
then started again with nothing deleted. The tests read that pair of runs: together they ran every rule of
the paper DAG and wrote every table with numbers; the second did not redo the finished shard;
a third run has nothing to do.
"""

from __future__ import annotations

import csv
import math
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from backsal.rehearsal import (
    REPOSITORY,
    dry_run_rules,
    executed_rules,
    run_snakemake,
    snakemake_command,
    snakemake_environment,
    staged,
)

# The pair of runs takes about 5 minutes on a 2-core CPU (README): the suite's longest test.
pytestmark = pytest.mark.slow

_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: pointing_shard\)", re.MULTILINE)
# a job's block in Snakemake's output: "rule NAME:", indented "key: value" lines
_JOB = re.compile(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", re.MULTILINE)


@dataclass
class Rehearsal:
    root: Path
    configfiles: list[Path]
    planned: set[str]
    interrupted_log: str
    #: the first pointing shard's records, finished before the interruption, and their mtime
    finished_shard: Path
    finished_mtime: int
    resumed: subprocess.CompletedProcess[str]


def _jobs(log: str) -> list[tuple[str, dict[str, str]]]:
    """``(rule, {key: value})`` of every job block of a Snakemake output."""
    jobs = []
    for rule, body in _JOB.findall(log):
        fields = dict(line.strip().split(": ", 1) for line in body.splitlines() if ": " in line)
        jobs.append((rule, fields))
    return jobs


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_until_first_shard(arguments: list[str]) -> tuple[str, Path]:
    """Run Snakemake and stop it once a pointing_shard job has finished; its output and that
    job's records."""
    process = subprocess.Popen(
        snakemake_command(arguments),
        cwd=REPOSITORY,
        env=snakemake_environment(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # a shell's background job (nohup, CI runners) ignores SIGINT, and so would Snakemake
        preexec_fn=_default_sigint,
    )
    assert process.stdout is not None
    lines: list[str] = []
    finished = None
    for line in process.stdout:
        lines.append(line)
        match = _FINISHED.match(line)
        if match:
            finished = match.group(1)
            # SIGINT (Ctrl-C) kills the running jobs; Snakemake 9.27's graceful SIGTERM waits
            # for them, and was seen to hang once they had ended
            process.send_signal(signal.SIGINT)
            break
    rest, _ = process.communicate(timeout=600)
    log = "".join(lines) + rest
    assert finished is not None, f"no pointing shard finished:\n{log[-6000:]}"
    assert process.returncode != 0, "the run ended before it was stopped"
    outputs = [fields["output"] for _, fields in _jobs(log) if fields.get("jobid") == finished]
    assert len(outputs) == 1, outputs
    return log, Path(outputs[0])


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Rehearsal:
    root = tmp_path_factory.mktemp("rehearsal")
    with staged(root, images=2, scope="ci") as configfiles:
        planned = dry_run_rules(configfiles)
        arguments = ["--cores", "2", "--configfile", *map(str, configfiles)]
        interrupted_log, finished_shard = _run_until_first_shard(arguments)
        finished_mtime = finished_shard.stat().st_mtime_ns
        resumed = run_snakemake(arguments)
    return Rehearsal(
        root,
        configfiles,
        planned,
        interrupted_log,
        finished_shard,
        finished_mtime,
        resumed,
    )


def test_rehearsal_runs_every_rule_of_the_paper_dag(rehearsal):
    log = rehearsal.resumed.stdout + rehearsal.resumed.stderr
    assert rehearsal.resumed.returncode == 0, log[-6000:]
    assert rehearsal.planned == dry_run_rules([REPOSITORY / "config" / "paper.yaml"])
    executed = executed_rules(rehearsal.interrupted_log) | executed_rules(log)
    assert executed == rehearsal.planned, sorted(rehearsal.planned - executed)
    tables = sorted((rehearsal.root / "results" / "tables").rglob("*.csv"))
    assert tables, "no table was written"
    for table in tables:
        _assert_holds_numbers(table)


def test_resumed_run_keeps_the_finished_shard(rehearsal):
    log = rehearsal.resumed.stdout + rehearsal.resumed.stderr
    assert rehearsal.resumed.returncode == 0, log[-6000:]
    rerun = [fields["output"] for rule, fields in _jobs(log) if rule == "pointing_shard"]
    assert rerun, "the interrupted run had left no pointing shard to do"
    assert str(rehearsal.finished_shard) not in rerun
    assert rehearsal.finished_shard.stat().st_mtime_ns == rehearsal.finished_mtime


def test_rerun_after_the_rehearsal_does_nothing(rehearsal):
    assert rehearsal.resumed.returncode == 0
    again = run_snakemake(["-n", "--configfile", *map(str, rehearsal.configfiles)])
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]


def _assert_holds_numbers(table: Path) -> None:
    """Rows, a column of numbers, and a number in each row (a cell may be blank where its
    method has no such layer, as NormGrad-proper has no input map)."""
    with table.open() as handle:  # the provenance header is '#' lines
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    assert rows, table
    numeric = [key for key in rows[0] if any(_is_number(row[key]) for row in rows)]
    assert numeric, f"{table}: no column of numbers"
    empty = [row for row in rows if not any(_is_number(row[key]) for key in numeric)]
    assert not empty, f"{table}: rows without a number {empty}"


def _is_number(value: str) -> bool:
    try:
        return not math.isnan(float(value.rstrip("%")))
    except ValueError:
        return False
