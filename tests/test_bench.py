"""``bench/gpu.sh`` still runs: its CPU dry run, every step at tiny sizes.

A session is lent a GPU rarely and for minutes; the script is what it runs first, in one call. A
benchmark that no longer runs (a renamed function, a changed signature) would cost that call, so
the suite runs each step of the script's CPU branch here, where its figures mean nothing but its
code paths are the GPU run's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The JSON file each step of the CPU dry run writes (``bench/common.py``'s ``write`` names).
DRY_RUN_RESULTS = {
    "bench_engine.py": "engine_cpu.json",
    "bench_meta.py": "meta_cpu_32px.json",
    "bench_shared_forward.py": "shared_forward_cpu.json",
    "bench_metrics.py": "metrics_cpu.json",
    "bench_deletion.py": "deletion_cpu.json",
    "bench_sanity.py": "sanity_cpu.json",
    "profile_meta.py": "profile_meta_cpu_32px.json",
}


@pytest.mark.slow
def test_gpu_script_dry_run_runs_every_step(tmp_path):
    results, copied = tmp_path / "results", tmp_path / "copied"
    copied.mkdir()
    env = {
        **os.environ,
        "BACKSAL_BENCH_DEVICE": "cpu",
        "BACKSAL_BENCH_OUT": str(results),
        "OUT": str(copied),
        "PYTHON": sys.executable,
    }
    out = ROOT / "bench" / "out"
    before = {path: path.stat().st_mtime_ns for path in out.glob("*")} if out.is_dir() else {}
    done = subprocess.run(
        ["bash", "bench/gpu.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    steps = re.findall(r"^=== bench/(\S+)", log, flags=re.MULTILINE)
    assert sorted(steps) == sorted(DRY_RUN_RESULTS), log[-4000:]
    assert log.count("=== rc=0 ") == len(DRY_RUN_RESULTS), log[-4000:]
    for name in DRY_RUN_RESULTS.values():
        payload = json.loads((results / name).read_text())
        assert payload["machine"]["device"] == "cpu", name
        assert (copied / name).is_file(), f"{name} not copied to $OUT"
    after = {path: path.stat().st_mtime_ns for path in out.glob("*")} if out.is_dir() else {}
    assert after == before, "a step wrote into bench/out/ despite $BACKSAL_BENCH_OUT"
