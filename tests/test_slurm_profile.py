"""profiles/slurm: real, commented options; site settings from the environment. No cluster needed.

The profile running on an actual SLURM cluster is tests/test_slurm.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from slurm.harness import PROFILE_DIR, TOY_SNAKEFILE

PROFILE = PROFILE_DIR / "config.yaml"
SITE_VARIABLES = ("BACKSAL_SLURM_ACCOUNT", "BACKSAL_SLURM_PARTITION")
# YTE's own keys: they configure the templating and never reach snakemake.
YTE_KEYS = {"__use_yte__", "__definitions__"}


def parse_profile(monkeypatch: pytest.MonkeyPatch, **site: str) -> dict[str, object]:
    """The profile as snakemake reads it, with the given BACKSAL_SLURM_* variables set."""
    from snakemake.profiles import ProfileConfigFileParser

    for name in SITE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in site.items():
        monkeypatch.setenv(name, value)
    with open(PROFILE) as stream:
        return dict(ProfileConfigFileParser().parse(stream))


def test_slurm_plugin_is_at_least_2_7_1() -> None:
    # Earlier versions submitted a job that asks for gpu=2 twice.
    installed = tuple(
        int(part) for part in re.findall(r"\d+", version("snakemake-executor-plugin-slurm"))[:3]
    )
    assert installed >= (2, 7, 1), installed


def test_every_profile_key_is_a_snakemake_option(monkeypatch: pytest.MonkeyPatch) -> None:
    from snakemake.cli import get_argument_parser

    options = {name for action in get_argument_parser()._actions for name in action.option_strings}
    profile = parse_profile(
        monkeypatch, BACKSAL_SLURM_ACCOUNT="acct", BACKSAL_SLURM_PARTITION="part"
    )
    unknown = [key for key in profile if f"--{key}" not in options]
    assert not unknown, f"not snakemake options: {unknown}"
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"


def test_every_profile_entry_has_a_comment() -> None:
    """Each key, top-level or under default-resources, has a comment line right above it.

    A key that opens a YTE conditional (`?if ...:`) counts for the key inside it.
    """
    lines = PROFILE.read_text().splitlines()
    key = re.compile(r"^(\s*)(\?if .*|[\w-]+):")
    uncommented = []
    for number, line in enumerate(lines):
        match = key.match(line)
        if not match:
            continue
        above = lines[number - 1].strip() if number else ""
        if not (above.startswith("#") or above.startswith("?if ")):
            uncommented.append(line.strip())
    assert not uncommented, f"entries without a comment above them: {uncommented}"


def test_site_settings_are_absent_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    resources = parse_profile(monkeypatch)["default-resources"]
    assert isinstance(resources, list)
    assert sorted(entry.split("=")[0] for entry in resources) == ["mem_mb", "runtime"]


def test_site_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    resources = parse_profile(
        monkeypatch, BACKSAL_SLURM_ACCOUNT="proj-1", BACKSAL_SLURM_PARTITION="all"
    )["default-resources"]
    assert isinstance(resources, list)
    # Quoted, so that snakemake's evaluation keeps them strings (`all` is a Python builtin).
    assert "slurm_account='proj-1'" in resources
    assert "slurm_partition='all'" in resources


def test_dry_run_shows_profile_resources(tmp_path: Path) -> None:
    """snakemake itself loads the profile: memory and time grow from attempt 1, site settings apply."""
    env = {k: v for k, v in os.environ.items() if k not in (*SITE_VARIABLES, "SNAKEMAKE_PROFILE")}
    env.update(BACKSAL_SLURM_ACCOUNT="proj-1", BACKSAL_SLURM_PARTITION="all")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--dry-run",
            "--snakefile",
            str(TOY_SNAKEFILE),
            "--directory",
            str(tmp_path),
            "--workflow-profile",
            str(PROFILE_DIR),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout + done.stderr
    flaky = out[out.index("rule flaky:") :].split("\n\n")[0]
    assert "mem_mb=4000," in flaky
    assert "runtime=60," in flaky
    assert "slurm_account=proj-1" in flaky
    assert "slurm_partition=all" in flaky
    gpu = out[out.index("rule gpu_any:") :].split("\n\n")[0]
    assert "gpu=1" in gpu
