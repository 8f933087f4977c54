"""profiles/slurm on a real one-node SLURM cluster (tests/slurm/cluster.sh, tests/slurm/harness.py).

The cluster is Debian's slurmctld + slurmd + munge without slurmdbd, started once per test
session and stopped at its end (unless it was already up before). It needs root and apt-get (or
the packages already installed); elsewhere these tests are skipped with the reason, except where
BACKSAL_REQUIRE_SLURM=1 (.ci/run sets it): there they fail, so that CI cannot pass without them.

What they check, on the toy workflow tests/slurm/toy/Snakefile:
- every job goes through sbatch and comes back COMPLETED; GPU rules get a GPU (any, or the model
  a user profile pins), CPU rules none; partitions come from the environment or a user profile;
- a job that fails on the cluster is reported and retried with more memory and time;
- a run interrupted with Ctrl-C, killed outright, or terminated resumes without redoing finished
  jobs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from slurm.harness import (
    DEFAULT_PARTITION,
    GPU_TYPE,
    OTHER_PARTITION,
    REPO_ROOT,
    TOY_SNAKEFILE,
    ClusterUnavailable,
    WorkflowRun,
    cluster_down,
    cluster_is_up,
    cluster_up,
    finish_workflow,
    read_facts,
    run_workflow_on_slurm,
    signal_snakemake,
    slurm_job,
    start_workflow_on_slurm,
    wait_for_job_state,
)

pytestmark = pytest.mark.slurm

REQUIRE_SLURM = os.environ.get("BACKSAL_REQUIRE_SLURM") == "1"

# The real workflow and its tiny configuration (the lead's; tested here once both exist).
REAL_SNAKEFILE = REPO_ROOT / "Snakefile"
TINY_CONFIG = REPO_ROOT / "tests" / "config" / "tiny.yaml"


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[None]:
    """The test cluster, up for the whole session; stopped at the end if this session started it."""
    already_up = cluster_is_up()
    try:
        cluster_up()
    except ClusterUnavailable as error:
        if REQUIRE_SLURM:
            pytest.fail(f"BACKSAL_REQUIRE_SLURM=1 but no SLURM test cluster here: {error}")
        pytest.skip(f"no SLURM test cluster on this machine: {error}")
    yield
    if not already_up:
        cluster_down()


def tail(run: WorkflowRun, lines: int = 60) -> str:
    """The end of a run's log, for assertion messages."""
    return "\n".join(run.log.splitlines()[-lines:])


def executions(workdir: Path) -> Counter[str]:
    """How often each toy job started: executions.log has a line '<rule> <sample or -> <job id>'."""
    log = workdir / "executions.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(" ".join(line.split()[:2]) for line in lines)


# --- one complete run --------------------------------------------------------------------------

# A user's own profile, layered under the workflow profile with --profile: keys the workflow
# profile does not set (here set-resources) pass through.
USER_PROFILE = f"""\
set-resources:
  gpu_pinned:
    gpu_model: {GPU_TYPE}
  cpu_step:
    slurm_partition: {DEFAULT_PARTITION}
"""


@pytest.fixture(scope="module")
def toy_run(
    slurm_cluster: None, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, WorkflowRun]:
    """The toy workflow, run once to completion with site settings from the environment and a
    user profile: partition `alt` for all rules but cpu_step (`main`), gpu_pinned's model pinned."""
    root = tmp_path_factory.mktemp("toy")
    user_profile = root / "user-profile"
    user_profile.mkdir()
    (user_profile / "config.yaml").write_text(USER_PROFILE)
    workdir = root / "run"
    run = run_workflow_on_slurm(
        workdir,
        TOY_SNAKEFILE,
        extra_args=["--profile", str(user_profile)],
        env={"BACKSAL_SLURM_PARTITION": OTHER_PARTITION},
    )
    assert not run.timed_out, f"snakemake hung and was stopped by timeout:\n{tail(run)}"
    assert run.returncode == 0, tail(run)
    return workdir, run


def test_every_job_went_through_slurm(toy_run: tuple[Path, WorkflowRun]) -> None:
    workdir, run = toy_run
    ids = run.slurm_job_ids
    jobs = {job_id: slurm_job(job_id) for job_id in ids}
    # Both cpu_steps, both GPU rules, slow, and flaky twice; `all` is a local rule.
    assert len(ids) == 7, tail(run)
    assert {job["JobName"] for job in jobs.values()} == {run.run_id}
    assert Counter(job["JobState"] for job in jobs.values()) == {"COMPLETED": 6, "FAILED": 1}
    outputs = [
        "results/cpu/a.txt",
        "results/cpu/b.txt",
        "results/gpu_any.txt",
        "results/gpu_pinned.txt",
        "results/flaky.txt",
        "results/slow.txt",
    ]
    for output in outputs:
        facts = read_facts(workdir / output)
        # Written inside one of this run's SLURM jobs, which then completed.
        assert facts["slurm_job_id"] in ids, output
        assert jobs[facts["slurm_job_id"]]["JobState"] == "COMPLETED", output
    assert executions(workdir) == {
        "cpu_step a": 1,
        "cpu_step b": 1,
        "gpu_any -": 1,
        "gpu_pinned -": 1,
        "flaky -": 2,
        "slow -": 1,
    }
    slow = (workdir / "results/slow.txt").read_text()
    assert "sample=a" in slow and "sample=b" in slow


def test_gpu_rules_get_a_gpu_and_cpu_rules_none(toy_run: tuple[Path, WorkflowRun]) -> None:
    workdir, _ = toy_run
    any_gpu = read_facts(workdir / "results/gpu_any.txt")
    assert any_gpu["TresPerJob"] == "gres:gpu:1"
    assert any_gpu["cuda_visible_devices"] == "0"
    pinned = read_facts(workdir / "results/gpu_pinned.txt")
    assert pinned["TresPerJob"] == f"gres:gpu:{GPU_TYPE}:1"  # gpu_model from the user profile
    assert pinned["cuda_visible_devices"] == "0"
    for sample in "ab":
        cpu = read_facts(workdir / f"results/cpu/{sample}.txt")
        assert "TresPerJob" not in cpu
        assert cpu["cuda_visible_devices"] == "none"


def test_partitions_follow_environment_and_user_profile(toy_run: tuple[Path, WorkflowRun]) -> None:
    workdir, _ = toy_run
    # BACKSAL_SLURM_PARTITION sends every job to `alt` instead of the default `main`...
    for output in ["gpu_any.txt", "gpu_pinned.txt", "flaky.txt", "slow.txt"]:
        assert read_facts(workdir / "results" / output)["partition"] == OTHER_PARTITION, output
    # ...except where the user profile's set-resources names another for one rule.
    for sample in "ab":
        assert read_facts(workdir / f"results/cpu/{sample}.txt")["partition"] == DEFAULT_PARTITION


def test_failed_job_is_reported_and_retried_with_more_memory(
    toy_run: tuple[Path, WorkflowRun],
) -> None:
    workdir, run = toy_run
    failed = [job_id for job_id in run.slurm_job_ids if slurm_job(job_id)["JobState"] == "FAILED"]
    assert len(failed) == 1
    first = slurm_job(failed[0])
    assert first["Comment"] == "rule_flaky"
    # Reported: the rule, the SLURM job and its state, then the restart.
    assert "Error in rule flaky" in run.log
    assert f"SLURM-job '{failed[0]}' failed, SLURM status is: 'FAILED'" in run.log
    assert "Trying to restart job" in run.log
    # The failed job's SLURM log is kept (successful ones are deleted) and says why.
    kept = workdir / ".snakemake/slurm_logs/rule_flaky" / f"{failed[0]}.log"
    assert "failing on purpose on the first attempt" in kept.read_text()
    # The retry asked for twice the memory and time of the first attempt (profile: x attempt).
    facts = read_facts(workdir / "results/flaky.txt")
    retry = slurm_job(facts["slurm_job_id"])
    assert int(facts["first_attempt_mem_mb"]) == 4000
    assert int(facts["retry_mem_mb"]) == 8000 == int(facts["mem_mb_resource"])
    assert (first["MinMemoryNode"], retry["MinMemoryNode"]) == ("4000M", "8000M")
    assert (first["TimeLimit"], retry["TimeLimit"]) == ("01:00:00", "02:00:00")


# --- interrupted runs --------------------------------------------------------------------------


def slow_config(gate: Path) -> list[str]:
    """The toy run's arguments for `slow` waiting on ``gate``; every run of one workdir needs the
    same ones, or the changed parameter alone would make snakemake redo `slow`."""
    return ["--config", f"gate={gate}"]


def start_until_slow_runs(workdir: Path, gate: Path, log_name: str):
    """Start the toy run up to `slow`; return (process, started, SLURM id of `slow`) once `slow`
    is running on the cluster, where it waits for ``gate``."""
    marker = workdir / "slow.started"
    marker.unlink(missing_ok=True)
    started = time.monotonic()
    process = start_workflow_on_slurm(
        workdir,
        TOY_SNAKEFILE,
        targets=["results/slow.txt"],
        extra_args=slow_config(gate),
        log_name=log_name,
    )
    while not (marker.exists() and marker.read_text().strip()):
        if process.poll() is not None:
            log = (workdir / log_name).read_text(errors="replace")
            pytest.fail(f"snakemake ended before `slow` started:\n{log[-4000:]}")
        if time.monotonic() - started > 180:
            signal_snakemake(process, signal.SIGKILL)
            pytest.fail("`slow` did not start on the cluster within 180 s")
        time.sleep(0.5)
    return process, started, marker.read_text().strip()


def test_interrupted_runs_resume_without_redoing_finished_jobs(
    slurm_cluster: None, tmp_path: Path
) -> None:
    workdir = tmp_path / "run"
    gate = workdir / "gate"
    cpu_outputs = [workdir / f"results/cpu/{sample}.txt" for sample in "ab"]

    # 1. Ctrl-C while `slow` runs: snakemake cancels its SLURM job and exits.
    process, started, slow_1 = start_until_slow_runs(workdir, gate, "1-ctrl-c.log")
    mtimes = [path.stat().st_mtime_ns for path in cpu_outputs]  # both finished before `slow`
    signalled = time.monotonic()
    signal_snakemake(process, signal.SIGINT)
    run = finish_workflow(process, workdir, started, "1-ctrl-c.log")
    assert not run.timed_out, tail(run)
    assert time.monotonic() - signalled < 60, "snakemake took over a minute to stop on Ctrl-C"
    assert wait_for_job_state(slow_1, ["CANCELLED"]) == "CANCELLED"
    assert not (workdir / "results/slow.txt").exists()

    # 2. Killed outright while `slow` runs again (the cpu_steps are not redone): the SLURM job
    # is orphaned and the working directory stays locked. The recovery the README describes:
    # cancel the run's jobs by its run ID (their job name), unlock, run again.
    process, started, slow_2 = start_until_slow_runs(workdir, gate, "2-kill.log")
    signal_snakemake(process, signal.SIGKILL)
    run = finish_workflow(process, workdir, started, "2-kill.log")
    assert slurm_job(slow_2)["JobState"] == "RUNNING"
    locked = run_workflow_on_slurm(
        workdir,
        TOY_SNAKEFILE,
        targets=["results/slow.txt"],
        extra_args=slow_config(gate),
        log_name="2-locked.log",
    )
    assert locked.returncode != 0 and "cannot be locked" in locked.log, tail(locked)
    subprocess.run(["scancel", "--name", run.run_id], check=True, timeout=30)
    assert wait_for_job_state(slow_2, ["CANCELLED"]) == "CANCELLED"
    unlocked = run_workflow_on_slurm(
        workdir, TOY_SNAKEFILE, extra_args=["--unlock"], log_name="2-unlock.log"
    )
    assert unlocked.returncode == 0, tail(unlocked)

    # 3. Terminated (SIGTERM) while `slow` runs a third time: snakemake stops submitting but waits
    # for the running job. It must notice when that job finishes; the plugin polling with sacct
    # on a cluster without slurmdbd never would, and snakemake would hang.
    process, started, slow_3 = start_until_slow_runs(workdir, gate, "3-term.log")
    signal_snakemake(process, signal.SIGTERM)
    time.sleep(2)
    assert process.poll() is None, "snakemake exited on SIGTERM without waiting for its job"
    gate.touch()
    run = finish_workflow(process, workdir, started, "3-term.log")
    assert not run.timed_out, f"snakemake did not notice its job finish:\n{tail(run)}"
    assert "Will exit after finishing currently running jobs" in run.log
    assert slurm_job(slow_3)["JobState"] == "COMPLETED"
    assert (workdir / "results/slow.txt").exists()

    # Finished jobs ran once across all these runs, and nothing is left to do.
    assert [path.stat().st_mtime_ns for path in cpu_outputs] == mtimes
    assert executions(workdir) == {"cpu_step a": 1, "cpu_step b": 1, "slow -": 3}
    dry = run_workflow_on_slurm(
        workdir,
        TOY_SNAKEFILE,
        targets=["results/slow.txt"],
        extra_args=[*slow_config(gate), "--dry-run"],
        log_name="4-dry.log",
    )
    assert dry.returncode == 0 and "Nothing to be done" in dry.log, tail(dry)


# --- the real workflow -------------------------------------------------------------------------


#: The real workflow's rules that run as cluster jobs (all but the Snakefile's ``localrules``), as
#: the tiny config's DAG has them; figures_maps is one rule per run.
CLUSTER_RULES = {
    "train_model",
    "pointing_shard",
    "pointing_examples",
    "combination_shard",
    "meta_shard",
    "meta_examples",
    "sensitivity_shard",
    "sanity",
    "deletion",
    "figures_maps_test_vgg",
}
#: Local rules left out of the SLURM run, with everything downstream of them: the evaluation
#: merges, the notebooks and the findings run where Snakemake runs, the same code as the local
#: tiny run of tests/test_workflow.py, and on the two cores of the test machine they only competed
#: with the cluster jobs (they were half the run's jobs).
OMITTED_LOCAL_RULES = (
    "merge_evaluation",
    "evaluate_combination",
    "evaluate_meta",
    "evaluate_sensitivity",
    "figures_pointing",
    "figures_combination",
    "figures_sensitivity",
    "figures_meta",
    "figures_faithfulness",
)


def _local_rules(snakefile: Path) -> set[str]:
    """The rule names of the ``localrules:`` block of ``snakefile``."""
    block = re.search(r"^localrules:\n((?:    \w+,?\n)+)", snakefile.read_text(), re.MULTILINE)
    assert block, f"{snakefile} has no localrules block"
    return {line.strip().rstrip(",") for line in block.group(1).splitlines()}


def test_real_workflow_with_tiny_config_runs_through_slurm(
    slurm_cluster: None, tmp_path: Path
) -> None:
    """The repository's workflow, tiny config, through the SLURM profile: every rule that is a
    cluster job runs on the cluster, next to the local rules that feed them (the evaluation the
    combination weights come from), which run locally. One shard per stage: each cluster job
    re-reads the workflow on its node (about 15 s of start-up on the test machine), and more
    shards of a rule are more of the same (tests/test_workflow.py merges several)."""
    assert set(OMITTED_LOCAL_RULES) <= _local_rules(REAL_SNAKEFILE)
    config = yaml.safe_load(TINY_CONFIG.read_text(encoding="utf-8"))
    config["pointing"]["shards"] = config["combination"]["shards"] = 1
    configfile = tmp_path / "tiny_one_shard.yaml"
    configfile.write_text(yaml.safe_dump(config), encoding="utf-8")
    workdir = tmp_path / "run"
    run = run_workflow_on_slurm(
        workdir,
        REAL_SNAKEFILE,
        configfile,
        extra_args=["--omit-from", *OMITTED_LOCAL_RULES],
        timeout=900,
    )
    assert not run.timed_out, tail(run)
    assert run.returncode == 0, tail(run)
    submitted = set(re.findall(r"^rule (\w+):$", run.log, re.MULTILINE))
    assert submitted == CLUSTER_RULES, tail(run)
    assert len(run.slurm_job_ids) == len(re.findall(r"^rule \w+:$", run.log, re.MULTILINE))
    # every job, cluster and local, finished (Snakemake reports a cluster job finished only once
    # SLURM says COMPLETED; the cluster itself forgets finished jobs after MinJobAge, 300 s)
    started = re.findall(r"^(?:local)?rule \w+:$", run.log, re.MULTILINE)
    assert len(re.findall(r"^Finished jobid: \d+", run.log, re.MULTILINE)) == len(started)
    results = workdir / "results"
    pointing = pd.read_parquet(results / "evaluation" / "pointing" / "test" / "vgg.parquet")
    assert pointing["accuracy"].between(0, 1).all() and "center" in set(pointing["method"])
    shards = sorted((results / "records" / "pointing" / "test" / "vgg").glob("*/shard-*.parquet"))
    assert len(shards) == 3  # a job per backward rule (plain, guided, c-EBP), each on SLURM
    combined = sorted((results / "records" / "combination" / "test" / "vgg").rglob("*.parquet"))
    assert len(combined) == 1, combined  # after the locally computed layer weights
    figures = results / "figures" / "test" / "vgg"
    for stem in ("phase_grid_features.20_000", "combined_000", "meta_maps_features.20_000"):
        assert (figures / f"{stem}.png").stat().st_size > 1000, stem  # figures_maps' outputs
    # the bookkeeping rules ran locally, the saliency jobs on the cluster
    assert "localrule evaluate_pointing" in run.log and "localrule layer_weights" in run.log
