"""Run a Snakemake workflow through the SLURM profile on a throwaway one-node SLURM cluster.

The cluster itself is ``tests/slurm/cluster.sh`` (Debian's slurmctld, slurmd and munge, no
slurmdbd); this module starts and stops it and runs snakemake against it the way a user would::

    from slurm.harness import cluster_down, cluster_up, run_workflow_on_slurm, slurm_job

    cluster_up()  # raises ClusterUnavailable with the reason if this machine cannot host it
    run = run_workflow_on_slurm(workdir, REPO_ROOT / "Snakefile", REPO_ROOT / "tests/config/tiny.yaml")
    assert run.returncode == 0, run.log
    for job_id in run.slurm_job_ids:
        assert slurm_job(job_id)["JobState"] == "COMPLETED"
    cluster_down()

Everything is run with the same Python (and so the same snakemake and plugin) as the caller.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
CLUSTER_SH = HERE / "cluster.sh"
PROFILE_DIR = REPO_ROOT / "profiles" / "slurm"
TOY_SNAKEFILE = HERE / "toy" / "Snakefile"

#: Exit status of cluster.sh when this machine cannot host the cluster (the automake "skip" code).
EXIT_SKIP = 77

#: The test cluster's partitions (see cluster.sh): jobs land in the default one unless told otherwise.
DEFAULT_PARTITION = "main"
OTHER_PARTITION = "alt"
#: The type of the cluster's one fake GPU, usable as the ``gpu_model`` resource.
GPU_TYPE = "testgpu"

#: Arguments every run gets on top of the profile, because the test cluster is tiny and idle:
#: - the first status check after 2 s instead of the profile's 40 s (the plugin then polls every
#:   2 s while jobs finish, backing off by 10 s per idle check);
#: - no account: without slurmdbd there is none to guess (plugin 2.8.0 accepts the flag but still
#:   tries to guess, and only logs a warning when that fails).
TEST_CLUSTER_ARGS: tuple[str, ...] = (
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--slurm-no-account",
)

#: Variables removed from the environment of snakemake: a user's default profile would be merged
#: into the run, the site settings would override what a test asks for, and an inherited
#: CUDA_VISIBLE_DEVICES would reach CPU jobs through sbatch --export=ALL.
_SCRUBBED_ENV = (
    "SNAKEMAKE_PROFILE",
    "BACKSAL_SLURM_ACCOUNT",
    "BACKSAL_SLURM_PARTITION",
    "CUDA_VISIBLE_DEVICES",
    "SLURM_CONF",
)

_SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")
_RUN_ID = re.compile(r"SLURM run ID: (\S+)")


class ClusterUnavailable(Exception):
    """This machine cannot host the test cluster (not root, no apt-get, a real SLURM is present...)."""


def _cluster(action: str, state_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if state_dir is not None:
        env["BACKSAL_SLURM_STATE_DIR"] = str(state_dir)
    return subprocess.run(
        ["bash", str(CLUSTER_SH), action],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,  # a cold apt-get install included
    )


def cluster_up(state_dir: Path | None = None) -> str:
    """Install (if needed), configure and start the cluster; return cluster.sh's log.

    Idempotent: with the cluster already up it only checks that the node is idle (well under a
    second). Raises ClusterUnavailable with cluster.sh's reason when the machine cannot host it,
    RuntimeError when starting it failed.
    """
    if sys.platform != "linux":
        raise ClusterUnavailable(f"needs Linux, this is {sys.platform}")
    done = _cluster("up", state_dir)
    if done.returncode == EXIT_SKIP:
        reasons = [line for line in done.stderr.splitlines() if line.startswith("SKIP:")]
        raise ClusterUnavailable(reasons[-1][5:].strip() if reasons else done.stderr.strip())
    if done.returncode != 0:
        raise RuntimeError(f"cluster.sh up failed ({done.returncode}):\n{done.stderr}")
    return done.stderr


def cluster_is_up(state_dir: Path | None = None) -> bool:
    """True if the slurmctld and slurmd that cluster.sh started are running."""
    return _cluster("status", state_dir).returncode == 0


def cluster_down(state_dir: Path | None = None) -> str:
    """Cancel the cluster's jobs, stop the daemons cluster.sh started and remove its config.

    Returns cluster.sh's log. Daemons it did not start (a system munged, say) are left alone.
    """
    done = _cluster("down", state_dir)
    if done.returncode != 0:
        raise RuntimeError(f"cluster.sh down failed ({done.returncode}):\n{done.stderr}")
    return done.stderr


@dataclass
class WorkflowRun:
    """A finished snakemake run: its exit status and everything it printed."""

    returncode: int
    log: str
    seconds: float

    @property
    def slurm_job_ids(self) -> list[str]:
        """SLURM job ids of every job the run submitted, in submission order."""
        return [slurm_id for _, slurm_id in _SUBMITTED.findall(self.log)]

    @property
    def run_id(self) -> str:
        """The plugin's ID of this run; it is the SLURM job name of all the run's jobs."""
        match = _RUN_ID.search(self.log)
        if match is None:
            raise ValueError("no 'SLURM run ID' in the log: the run did not get to submitting")
        return match.group(1)

    @property
    def timed_out(self) -> bool:
        """True if `timeout` had to stop snakemake (124: TERM was enough, 137: it needed KILL)."""
        return self.returncode in (124, 137)


def snakemake_command(
    workdir: Path,
    snakefile: Path,
    configfile: Path | None = None,
    extra_args: Sequence[str] = (),
    *,
    targets: Sequence[str] = (),
    profile: Path = PROFILE_DIR,
    timeout: float = 300,
) -> list[str]:
    """The command line of a SLURM run of ``snakefile`` in ``workdir``.

    snakemake runs under ``timeout -k 10``: a plugin that loses track of its jobs can hang and
    ignore SIGTERM, and a hung test must still end. ``targets`` come first, where options that
    take several values (``--config``, ``--configfile``) cannot swallow them; ``extra_args`` come
    last, so they override the profile and TEST_CLUSTER_ARGS (``--set-resources``, ``--profile``).
    """
    command = [
        "timeout",
        "-k",
        "10",
        str(int(timeout)),
        sys.executable,
        "-m",
        "snakemake",
        *targets,
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        "--workflow-profile",
        str(profile),
        *TEST_CLUSTER_ARGS,
    ]
    if configfile is not None:
        command += ["--configfile", str(configfile)]
    return command + list(extra_args)


def _env(overrides: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env.update(overrides or {})
    return env


def start_workflow_on_slurm(
    workdir: Path,
    snakefile: Path,
    configfile: Path | None = None,
    extra_args: Sequence[str] = (),
    *,
    targets: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    profile: Path = PROFILE_DIR,
    timeout: float = 300,
    log_name: str = "snakemake.log",
) -> subprocess.Popen[bytes]:
    """Start snakemake in the background, writing everything it prints to ``workdir/log_name``.

    For tests that interrupt a run; ``finish_workflow`` collects it. Signals sent to the returned
    process reach snakemake: `timeout` passes them on (and kills it 10 s later if it is still
    running).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / log_name, "wb") as log:
        return subprocess.Popen(
            snakemake_command(
                workdir,
                snakefile,
                configfile,
                extra_args,
                targets=targets,
                profile=profile,
                timeout=timeout,
            ),
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_env(env),
        )


def signal_snakemake(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to the snakemake started by ``start_workflow_on_slurm``, as a user would.

    Not to `timeout`, its parent: `timeout` would pass the signal on twice (to snakemake and to
    its whole process group), and a second Ctrl-C interrupts snakemake's cancelling of its jobs.
    """
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"expected timeout (pid {process.pid}) to have one child: {children}")
    os.kill(int(children[0]), sig)


def finish_workflow(
    process: subprocess.Popen[bytes], workdir: Path, started: float, log_name: str = "snakemake.log"
) -> WorkflowRun:
    """Wait for a run from ``start_workflow_on_slurm`` and collect its result."""
    returncode = process.wait()
    log = (workdir / log_name).read_text(errors="replace")
    return WorkflowRun(returncode, log, time.monotonic() - started)


def run_workflow_on_slurm(
    workdir: Path,
    snakefile: Path,
    configfile: Path | None = None,
    extra_args: Sequence[str] = (),
    *,
    targets: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    profile: Path = PROFILE_DIR,
    timeout: float = 300,
    log_name: str = "snakemake.log",
) -> WorkflowRun:
    """Run ``snakefile`` (with ``configfile``) through the SLURM profile in ``workdir``; wait for it.

    The cluster must be up (``cluster_up``). ``env`` adds environment variables, e.g.
    ``{"BACKSAL_SLURM_PARTITION": "alt"}``; the caller's site settings are not passed on. The
    return value holds snakemake's exit status and output; it never raises for a failed run.
    """
    started = time.monotonic()
    process = start_workflow_on_slurm(
        workdir,
        snakefile,
        configfile,
        extra_args,
        targets=targets,
        env=env,
        profile=profile,
        timeout=timeout,
        log_name=log_name,
    )
    try:
        return finish_workflow(process, workdir, started, log_name)
    finally:
        if process.poll() is None:  # interrupted (e.g. KeyboardInterrupt): do not leak it
            process.send_signal(signal.SIGTERM)
            process.wait()


def slurm_job(job_id: str) -> dict[str, str]:
    """The controller's record of a job (``scontrol show job``) as a dict of its Key=Value fields.

    Finished jobs stay known for MinJobAge (300 s on the test cluster). Values with spaces (e.g.
    the command) are cut at the first space; the fields tests check have none.
    """
    done = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", job_id],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    fields: dict[str, str] = {}
    for token in done.stdout.split():
        key, sep, value = token.partition("=")
        if sep:
            fields.setdefault(key, value)
    return fields


def wait_for_job_state(job_id: str, states: Sequence[str], timeout: float = 30) -> str:
    """Wait until the controller reports job ``job_id`` in one of ``states``; return the state.

    Raises TimeoutError (with the last state seen) if it does not get there in ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    while True:
        state = slurm_job(job_id).get("JobState", "")
        if state in states:
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"SLURM job {job_id} is {state}, not one of {list(states)}")
        time.sleep(0.5)


def read_facts(path: Path) -> dict[str, str]:
    """A toy-workflow output (``key=value`` lines) as a dict; a repeated key keeps its first value."""
    facts: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            facts.setdefault(key.strip(), value.strip())
    return facts
