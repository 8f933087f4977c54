"""``bench/workflow.py``: reading Snakemake's log, and ``--per-process``'s CPU accounting.

The script times whole default runs (minutes), so it is not run here; the parts that turn a run
into numbers are, on a log excerpt and on real processes that log themselves.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workflow():
    # loaded from its path under its own name: ``import workflow`` could find the repository's
    # workflow/ folder (a namespace package) instead; bench/ on the path for its ``common``
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(
            "bench_workflow", ROOT / "bench" / "workflow.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(ROOT / "bench"))
        sys.modules.pop("bench_workflow", None)


LOG = """\
[Tue Dec  8 02:26:33 2026]
localrule prepare_dataset:
    output: results/datasets/digits_test.json
    jobid: 3
    wildcards: dataset=digits_test
    resources: tmpdir=/tmp

[Tue Dec  8 02:26:34 2026]
rule pointing_shard:
    jobid: 6
    benchmark: results/benchmarks/pointing/shard-0.tsv
    wildcards: dataset=digits_test, model=small_vgg, backward=all_rules, shard=0

[Tue Dec  8 02:26:36 2026]
Finished jobid: 3 (Rule: prepare_dataset)

[Tue Dec  8 02:27:14 2026]
Finished jobid: 6 (Rule: pointing_shard)

[Tue Dec  8 02:27:14 2026]
localrule all:
    jobid: 0
"""


def test_the_log_gives_each_job_its_rule_wildcards_and_seconds(workflow):
    jobs = {job.jobid: job for job in workflow.parse_log(LOG)}
    assert set(jobs) == {3, 6}  # not the target rule
    assert (jobs[3].rule, jobs[3].wildcards, jobs[3].wall_s) == (
        "prepare_dataset",
        "dataset=digits_test",
        3.0,
    )
    assert jobs[6].benchmark == "results/benchmarks/pointing/shard-0.tsv"
    assert jobs[6].wall_s == 40.0 and jobs[6].seconds == 40.0


@pytest.mark.parametrize(
    ("argv", "kind"),
    [
        (["/w/.snakemake/scripts/tmpoyivxzm8.pointing_shard.py"], "script pointing_shard"),
        (["/w/.snakemake/scripts/tmp_8n9etwc.meta_examples.py"], "script meta_examples"),
        (["/v/lib/site-packages/ipykernel_launcher.py", "-f", "/k.json"], "notebook kernel"),
        (["/v/bin/papermill", "--version"], "papermill --version"),
        (["/v/bin/papermill", "--log-level", "ERROR", "a.ipynb", "b.ipynb"], "papermill"),
        (["/v/bin/jupyter-nbconvert", "--execute", "a.ipynb"], "nbconvert"),
        (["/v/lib/site-packages/snakemake/__main__.py", "--cores", "2"], "snakemake"),
        (["-c"], "python -c"),
        (["/src/train.py"], "train.py"),
    ],
)
def test_process_kinds(workflow, argv, kind):
    assert workflow.process_kind(argv) == kind


def test_every_python_process_logs_its_cpu_seconds(workflow, tmp_path):
    site = workflow.write_sitecustomize(tmp_path / "site")
    log = tmp_path / "processes.jsonl"
    script = tmp_path / "tmpab12cd.pointing_shard.py"
    # a second of CPU in the "job", so that the logged seconds are seen to be its own
    script.write_text(
        "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end:\n    pass\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(site)]),
        "BACKSAL_PROCESS_LOG": str(log),
    }
    for command in ([sys.executable, str(script)], [sys.executable, "-c", "pass"]):
        subprocess.run(command, env=env, check=True, timeout=60)
    table = workflow.process_table(log.read_text(encoding="utf-8").splitlines())
    assert list(table) == ["script pointing_shard", "python -c"]  # most CPU first
    assert table["script pointing_shard"][0] == 1 and table["script pointing_shard"][1] >= 1.0
    assert table["python -c"][0] == 1 and table["python -c"][1] < 1.0
    # without the variable the same processes log nothing
    env.pop("BACKSAL_PROCESS_LOG")
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True, timeout=60)
    assert len(log.read_text(encoding="utf-8").splitlines()) == 2
