"""The default workflow run, timed from an empty results/ and resources/: where the seconds go.

    python bench/workflow.py                            # this tree, its config/config.yaml
    python bench/workflow.py --ref c3eea53              # and commit c3eea53, side by side
    python bench/workflow.py --configfile tests/config/tiny.yaml --keep /tmp/tiny-run

Each tree runs ``snakemake --snakefile TREE/Snakefile --directory WORKDIR --cores N`` in a fresh
temporary WORKDIR, so the run starts from nothing (datasets, trained models, records) and the
user's ``results/`` and ``resources/`` are never touched. A ``--ref`` is checked out as a detached
``git worktree`` (removed afterwards) and imports its own ``src/``; every tree runs with the
Python environment running this script. A relative ``--configfile`` is read from each tree, so
that each commit runs its own default config.

Printed per tree: the wall time; the CPU seconds of the whole run (snakemake and every job, from
``wait4``'s resource usage: on a loaded machine the wall time is inflated and noisy, CPU seconds
much less so); a per-rule summary; and the per-job table, sorted, with the wall seconds of each
job from Snakemake's log and, for rules with a ``benchmark:``, the benchmark file's wall seconds,
CPU seconds and peak memory. Those CPU seconds are a lower bound, not a measurement to compare:
Snakemake samples a job every 0.5 s for its first 15 s and every 30 s after, so a job of 15-45 s
reports about 15 s whatever it did; compare the run's ``wait4`` CPU and the wall seconds.
With ``--ref`` the ratios of this tree to the ref come last.

``--per-process`` also counts the CPU seconds of every Python process of the run, by kind (each
rule's job script, the notebook kernels, nbconvert or papermill, Snakemake itself): a
``sitecustomize`` put on ``PYTHONPATH`` makes each process log its own ``time.process_time()``
as it exits, so the jobs' CPU time is measured, not sampled. A process that is killed logs
nothing (papermill, where it runs the notebooks, kills some of its kernels), and an environment
with a ``sitecustomize`` of its own would have it shadowed for the run.

``--ref-python`` runs the refs with the Python of another environment, for commits whose
dependencies differ from this tree's (each commit in the environment it declares).
Results land in ``bench/out/workflow.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from backsal.rehearsal import snakemake_environment
from common import OUT

ROOT = Path(__file__).resolve().parents[1]
CURRENT = "WORKTREE"

__all__ = [
    "Job",
    "Run",
    "main",
    "parse_log",
    "process_kind",
    "process_table",
    "run_tree",
    "write_sitecustomize",
]

_PROCESS_LOG = "BACKSAL_PROCESS_LOG"

# what --per-process puts on PYTHONPATH (it must not import anything slow: it runs in every process)
_SITECUSTOMIZE = f"""\
\"\"\"Written by bench/workflow.py --per-process: this process logs its CPU seconds at exit.\"\"\"
import atexit, json, os, sys, time


def _log():
    record = {{"pid": os.getpid(), "cpu_s": time.process_time(), "argv": sys.argv}}
    with open(os.environ["{_PROCESS_LOG}"], "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\\n")


if os.environ.get("{_PROCESS_LOG}"):
    atexit.register(_log)
"""


@dataclass
class Job:
    """One job of a run: its rule, wildcards and times."""

    jobid: int
    rule: str
    wildcards: str = ""
    start: float | None = None
    end: float | None = None
    benchmark: str | None = None
    bench_s: float | None = None
    cpu_s: float | None = None
    max_rss_mb: float | None = None

    @property
    def wall_s(self) -> float | None:
        """Seconds between the job's start and finish lines (Snakemake logs whole seconds)."""
        if self.start is None or self.end is None:
            return None
        return self.end - self.start

    @property
    def seconds(self) -> float:
        """The benchmark file's wall seconds where there is one, else the log's."""
        return self.bench_s if self.bench_s is not None else (self.wall_s or 0.0)


@dataclass
class Run:
    """One timed workflow run."""

    tree: str
    commit: str
    configfile: str
    cores: int
    wall_s: float
    cpu_s: float
    returncode: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    jobs: list[Job] = field(default_factory=list)
    # --per-process: kind -> (processes, CPU seconds)
    processes: dict[str, tuple[int, float]] = field(default_factory=dict)

    @property
    def job_seconds(self) -> float:
        return sum(job.seconds for job in self.jobs)

    @property
    def job_cpu_seconds(self) -> float:
        return sum(job.cpu_s or 0.0 for job in self.jobs)


_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_RULE = re.compile(r"^(?:local)?rule (\w+):$")
_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def _stamp(text: str) -> float:
    return dt.datetime.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y").timestamp()


def parse_log(text: str) -> list[Job]:
    """The jobs of a Snakemake log: rule, wildcards, benchmark file, start and finish times."""
    jobs: dict[int, Job] = {}
    stamp: float | None = None
    opened: Job | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if match := _STAMP.match(line):
            stamp, opened = _stamp(match.group(1)), None
        elif match := _RULE.match(line):
            opened = Job(jobid=-1, rule=match.group(1), start=stamp)
        elif opened is not None and line.startswith("jobid:"):
            opened.jobid = int(line.split(":", 1)[1])
            jobs[opened.jobid] = opened
        elif opened is not None and line.startswith("wildcards:"):
            opened.wildcards = line.split(":", 1)[1].strip()
        elif opened is not None and line.startswith("benchmark:"):
            opened.benchmark = line.split(":", 1)[1].strip()
        elif match := _FINISHED.match(line):
            job = jobs.get(int(match.group(1)))
            if job is not None:
                job.end = stamp
    return [job for job in jobs.values() if job.rule != "all"]


def _read_benchmark(job: Job, workdir: Path) -> None:
    if not job.benchmark or not (workdir / job.benchmark).exists():
        return
    with (workdir / job.benchmark).open() as handle:
        row = next(csv.DictReader(handle, delimiter="\t"))
    job.bench_s = float(row["s"])
    job.cpu_s = float(row["cpu_time"])
    job.max_rss_mb = float(row["max_rss"]) if row["max_rss"] not in ("", "NA", "-") else None


def write_sitecustomize(directory: Path) -> Path:
    """Write the ``sitecustomize`` of ``--per-process`` into ``directory``; returns it.

    Every Python process started with ``directory`` on ``PYTHONPATH`` and ``$BACKSAL_PROCESS_LOG``
    set appends one JSON line (pid, CPU seconds, argv) to that file as it exits.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(_SITECUSTOMIZE, encoding="utf-8")
    return directory


def process_kind(argv: list[str]) -> str:
    """What a Python process of a run was, from its ``sys.argv``."""
    first = Path(argv[0]).name if argv else ""
    if match := re.fullmatch(r"tmp\w+\.(\w+)\.py", first):  # a job's script, as Snakemake copies it
        return f"script {match.group(1)}"
    if first == "ipykernel_launcher.py":
        return "notebook kernel"
    if first == "papermill":
        return "papermill --version" if "--version" in argv else "papermill"
    if first.startswith("jupyter-nbconvert"):
        return "nbconvert"
    if first == "__main__.py" and Path(argv[0]).parent.name == "snakemake":
        return "snakemake"
    return "python -c" if first == "-c" else first or "python"


def process_table(lines: list[str]) -> dict[str, tuple[int, float]]:
    """``kind -> (processes, CPU seconds)`` from the lines the processes logged."""
    table: dict[str, tuple[int, float]] = {}
    for line in lines:
        if not line.strip():
            continue
        record = json.loads(line)
        kind = process_kind(record["argv"])
        count, cpu = table.get(kind, (0, 0.0))
        table[kind] = (count + 1, cpu + float(record["cpu_s"]))
    return dict(sorted(table.items(), key=lambda item: -item[1][1]))


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@contextlib.contextmanager
def _tree(ref: str, scratch: Path) -> Iterator[tuple[Path, str]]:
    """The source tree of ``ref`` (``WORKTREE``: this checkout, uncommitted changes included)."""
    if ref == CURRENT:
        dirty = "+dirty" if _git("status", "--porcelain", "--untracked-files=no") else ""
        yield ROOT, _git("rev-parse", "--short", "HEAD") + dirty
        return
    commit = _git("rev-parse", "--short", f"{ref}^{{commit}}")
    path = scratch / f"tree-{commit}"
    _git("worktree", "add", "--detach", str(path), commit)
    try:
        yield path, commit
    finally:
        _git("worktree", "remove", "--force", str(path))


def run_tree(
    ref: str,
    configfile: str,
    cores: int,
    scratch: Path,
    keep: Path | None,
    extra: list[str],
    *,
    python: Path | None = None,
    per_process: bool = False,
) -> Run:
    """Run the workflow of ``ref`` from an empty working directory and time it.

    ``python``: the interpreter of the environment to run it in (default: this one).
    """
    with _tree(ref, scratch) as (tree, commit):
        config = Path(configfile) if Path(configfile).is_absolute() else tree / configfile
        if not config.exists():
            raise SystemExit(f"{config} does not exist in {ref}; pass an absolute --configfile")
        workdir = (keep / commit) if keep else scratch / f"run-{commit}"
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        env = dict(snakemake_environment(), PYTHONPATH=str(tree / "src"))
        if python is not None:  # its environment's bin/ first, as for this one
            env["PATH"] = f"{python.parent}{os.pathsep}{env['PATH']}"
        process_log = workdir / "processes.jsonl"
        if per_process:
            env["PYTHONPATH"] += f"{os.pathsep}{write_sitecustomize(scratch / 'per-process')}"
            env[_PROCESS_LOG] = str(process_log)
        command = [
            str(python or sys.executable), "-m", "snakemake", "--snakefile", str(tree / "Snakefile"),
            "--directory", str(workdir), "--configfile", str(config), "--cores", str(cores),
            *extra,
        ]  # fmt: skip
        print(f"--- {ref} ({commit}): {' '.join(command[2:])}", flush=True)
        load_before = os.getloadavg()
        start = time.perf_counter()
        with (workdir / "snakemake.out").open("w") as out:
            process = subprocess.Popen(
                command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT
            )
            # wait4 gives the CPU time of snakemake and of every job it waited for
            _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        jobs = parse_log((workdir / "snakemake.out").read_text())
        for job in jobs:
            _read_benchmark(job, workdir)
        run = Run(
            tree=ref,
            commit=commit,
            configfile=str(config.relative_to(tree))
            if config.is_relative_to(tree)
            else str(config),
            cores=cores,
            wall_s=wall,
            cpu_s=usage.ru_utime + usage.ru_stime,
            returncode=process.returncode,
            load_before=load_before,
            load_after=os.getloadavg(),
            jobs=jobs,
        )
        if per_process and process_log.exists():
            run.processes = process_table(process_log.read_text(encoding="utf-8").splitlines())
        if run.returncode != 0:
            print(f"snakemake failed ({run.returncode}); its output: {workdir / 'snakemake.out'}")
        return run


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(run: Run) -> str:
    """The per-rule summary and the per-job table of one run, as Markdown."""
    lines = [
        f"## {run.tree} ({run.commit}), {run.configfile}, --cores {run.cores}",
        "",
        f"wall {run.wall_s:.1f} s; CPU {run.cpu_s:.1f} s (snakemake + jobs); "
        f"{len(run.jobs)} jobs; job-seconds {run.job_seconds:.1f}, "
        f"job CPU seconds {run.job_cpu_seconds:.1f} (rules with a benchmark file, sampled: "
        "a lower bound); "
        f"load average {run.load_before[0]:.1f} before, {run.load_after[0]:.1f} after"
        + ("" if run.returncode == 0 else f"; FAILED (exit {run.returncode})"),
        "",
        "| rule | jobs | seconds | CPU s (sampled) |",
        "|---|---:|---:|---:|",
    ]
    by_rule: dict[str, list[Job]] = {}
    for job in run.jobs:
        by_rule.setdefault(job.rule, []).append(job)
    for rule, jobs in sorted(by_rule.items(), key=lambda item: -sum(j.seconds for j in item[1])):
        cpu = [j.cpu_s for j in jobs if j.cpu_s is not None]
        lines.append(
            f"| {rule} | {len(jobs)} | {sum(j.seconds for j in jobs):.1f} | "
            f"{_fmt(sum(cpu) if cpu else None)} |"
        )
    lines += [
        "",
        "| job | wildcards | seconds (log) | seconds (benchmark) | CPU s (sampled) | max RSS MB |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for job in sorted(run.jobs, key=lambda j: -j.seconds):
        lines.append(
            f"| {job.rule} | {job.wildcards} | {_fmt(job.wall_s, 0)} | {_fmt(job.bench_s)} | "
            f"{_fmt(job.cpu_s)} | {_fmt(job.max_rss_mb, 0)} |"
        )
    if run.processes:
        logged = sum(cpu for _, cpu in run.processes.values())
        lines += [
            "",
            f"Python processes, CPU seconds each logged at exit: {logged:.1f} of the run's "
            f"{run.cpu_s:.1f} (the rest: shells and other programs)",
            "",
            "| process | count | CPU s |",
            "|---|---:|---:|",
            *(f"| {kind} | {count} | {cpu:.1f} |" for kind, (count, cpu) in run.processes.items()),
        ]
    return "\n".join(lines)


def compare(current: Run, base: Run) -> str:
    """This tree against the ref: wall, CPU and job-seconds ratios."""

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "-"

    return "\n".join(
        [
            f"## {current.commit} / {base.commit}",
            "",
            "| | this tree | ref | ratio |",
            "|---|---:|---:|---:|",
            f"| wall s | {current.wall_s:.1f} | {base.wall_s:.1f} | "
            f"{ratio(current.wall_s, base.wall_s)} |",
            f"| CPU s (all) | {current.cpu_s:.1f} | {base.cpu_s:.1f} | "
            f"{ratio(current.cpu_s, base.cpu_s)} |",
            f"| job-seconds | {current.job_seconds:.1f} | {base.job_seconds:.1f} | "
            f"{ratio(current.job_seconds, base.job_seconds)} |",
            f"| jobs | {len(current.jobs)} | {len(base.jobs)} | |",
            *(
                f"| CPU s, {kind} | {mine:.1f} | {theirs:.1f} | {ratio(mine, theirs)} |"
                for kind in dict.fromkeys([*current.processes, *base.processes])
                for mine, theirs in [
                    (
                        current.processes.get(kind, (0, 0.0))[1],
                        base.processes.get(kind, (0, 0.0))[1],
                    )
                ]
            ),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", default="config/config.yaml", help="relative: per tree")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ref", action="append", default=[], help="a git commit to run too")
    parser.add_argument(
        "--no-current", action="store_true", help="run only the --ref commits, not this tree"
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the run directories here")
    parser.add_argument("--json", type=Path, default=OUT / "workflow.json")
    parser.add_argument(
        "--per-process", action="store_true", help="count every Python process's CPU seconds"
    )
    parser.add_argument(
        "--ref-python", type=Path, default=None,
        help="the Python of the refs' own environment (default: the one running this script)",
    )  # fmt: skip
    parser.add_argument("snakemake_args", nargs="*", help="more snakemake arguments, after --")
    args = parser.parse_args()
    trees = [*args.ref, *([] if args.no_current else [CURRENT])]
    if not trees:
        parser.error("nothing to run: --no-current without --ref")
    runs = []
    with tempfile.TemporaryDirectory(prefix="backsal-workflow-") as scratch:
        for ref in trees:
            run = run_tree(
                ref,
                args.configfile,
                args.cores,
                Path(scratch),
                args.keep,
                args.snakemake_args,
                python=args.ref_python if ref != CURRENT else None,
                per_process=args.per_process,
            )
            print(report(run) + "\n", flush=True)
            runs.append(run)
    if len(runs) > 1 and runs[-1].tree == CURRENT:
        for base in runs[:-1]:
            print(compare(runs[-1], base) + "\n")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "runs": [
            {
                **{k: v for k, v in asdict(run).items() if k != "jobs"},
                "job_seconds": run.job_seconds,
                "jobs": [{**asdict(job), "wall_s": job.wall_s} for job in run.jobs],
            }
            for run in runs
        ],
    }
    args.json.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.json}")
    if any(run.returncode for run in runs):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
