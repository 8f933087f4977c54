"""The paper run, rehearsed offline: ``config/paper.yaml`` through its whole DAG on stand-ins.

``make rehearsal`` (``python -m backsal.rehearsal``) writes format-faithful stand-ins of every
file the paper reads (:mod:`backsal.data.standins`: VOC07, COCO14, ImageNet val, TorchRay's flag
files, the six registry checkpoints at their real architectures with random weights) and runs
``snakemake --configfile config/paper.yaml <overlay>`` on them. The overlay only points at the
stand-ins and caps the work; every rule of the paper DAG runs, every table and figure is made:

* ``datasets.coco14.path``, ``datasets.imagenet_val.path`` and ``models.<name>.checkpoint``: the
  copies-you-already-have path (layout checks, checksum verification, nothing downloaded);
* ``mirror``: a local HTTP server on 127.0.0.1 serving the VOC07 test tar, the flag files and one
  model's weights under their published names, so the download, verification and extraction code
  runs inside the workflow;
* ``checksums``: the stand-ins' digests in place of the published ones;
* caps: one shard per job, few learning rates and queries (the rules stay the same).

The numbers mean nothing (noise images, random weights); what the rehearsal shows is that the
paper's code path runs end to end, that a rerun has nothing to do, and how long each stage takes
(:mod:`bench.paper_rehearsal` extrapolates to the full paper on a GPU).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from backsal.data.standins import SizeProfile, StandIns, write_standins
from backsal.data.voc import VOC07_TEST_ARCHIVE

__all__ = [
    "CI_POINTING_METHODS",
    "CI_STAGE_METHODS",
    "REPOSITORY",
    "RehearsalRun",
    "Scope",
    "dry_run_rules",
    "executed_rules",
    "overlay",
    "prepare",
    "rehearse",
    "run_snakemake",
    "serve_folder",
    "snakemake_command",
    "snakemake_environment",
    "staged",
]

#: The checkout whose Snakefile is rehearsed.
REPOSITORY = Path(__file__).resolve().parents[2]
#: The registry model fetched through the mirror (the others through ``checkpoint``).
MIRRORED_MODEL = "resnet50_imagenet"
#: How much of the paper's method grid a rehearsal computes: ``paper`` every method and layer of
#: ``config/paper.yaml``; ``ci`` a few methods per stage at two layers (every rule still runs and
#: every kind of table and figure is still made; what it leaves out is more of the same jobs).
Scope = Literal["paper", "ci"]
#: The ``ci`` scope's methods: the plain backward rule only, and still one of each kind of
#: method the paper's tables and figures need (the normgrad identity table, the phase grid).
CI_POINTING_METHODS = ("gradient", "norm_grad", "norm_grad_proper", "bias/sum")
CI_STAGE_METHODS = ("norm_grad",)
#: What Snakemake prints when every output of the DAG is present and up to date.
UP_TO_DATE = "Nothing to be done"
_RULE_LINE = re.compile(r"^(?:local)?rule (\w+):$", re.MULTILINE)


@dataclass
class RehearsalRun:
    """What a rehearsal did: the rules of the paper DAG, the rules that ran, the output."""

    planned: set[str]
    executed: set[str]
    returncode: int
    log: str


@contextmanager
def serve_folder(folder: str | Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 (a free port) while the block runs; yields the URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _tar_voc(standins: StandIns) -> Path:
    """The VOC stand-in as the official test tar (``VOCdevkit/VOC2007/...`` members)."""
    assert standins.voc07 is not None
    archive = standins.root / "files" / VOC07_TEST_ARCHIVE.filename
    with tarfile.open(archive, "w") as tar:
        tar.add(standins.voc07, arcname="VOCdevkit")
    return archive


def prepare(
    root: str | Path,
    *,
    images: int = 3,
    imagenet_images: int = 2,
    sizes: SizeProfile = "small",
    seed: int = 0,
) -> StandIns:
    """Write the stand-ins under ``root/standins`` (once; reused when already there)."""
    folder = Path(root).resolve() / "standins"
    done = folder / ".complete"
    if done.is_file():
        return _read_standins(folder)
    standins = write_standins(
        folder,
        voc_images=images,
        coco_images=images,
        imagenet_images=imagenet_images,
        sizes=sizes,
        seed=seed,
    )
    archive = _tar_voc(standins)
    standins.checksums[archive.name] = _sha256(archive)
    saved = {
        "checkpoints": {name: str(path) for name, path in standins.checkpoints.items()},
        "checksums": standins.checksums,
    }
    (folder / "standins.yaml").write_text(yaml.safe_dump(saved))
    done.touch()
    return standins


def _sha256(path: Path) -> str:
    from backsal.provenance import file_digest

    return file_digest(path, "sha256")


def _read_standins(folder: Path) -> StandIns:
    saved = yaml.safe_load((folder / "standins.yaml").read_text())
    return StandIns(
        root=folder,
        voc07=folder / "voc07" / "VOCdevkit",
        coco14=folder / "coco14",
        imagenet=folder / "imagenet",
        checkpoints={k: Path(v) for k, v in saved["checkpoints"].items()},
        checksums=dict(saved["checksums"]),
    )


def overlay(
    standins: StandIns,
    root: str | Path,
    mirror: str,
    *,
    max_queries: int = 4,
    max_images: int = 2,
    device: str = "cpu",
    scope: Scope = "paper",
) -> dict[str, Any]:
    """The config overlay on ``config/paper.yaml``: stand-ins, the mirror, caps. Nothing else."""
    root = Path(root).resolve()
    paper = yaml.safe_load((REPOSITORY / "config" / "paper.yaml").read_text())
    models = {
        name: {"checkpoint": str(path)}
        for name, path in standins.checkpoints.items()
        if name != MIRRORED_MODEL and name in paper["models"]
    }
    one_lr = {"lrs": [paper["meta"]["lrs"][0]]}
    config: dict[str, Any] = {
        "resources_dir": str(root / "resources"),
        "results_dir": str(root / "results"),
        "device": device,
        "mirror": mirror,
        "checksums": {name: f"sha256:{digest}" for name, digest in standins.checksums.items()},
        "datasets": {
            # voc07 through the mirror (download, verification, extraction of the tar)
            "coco14": {"path": str(standins.coco14)},
            "imagenet_val": {"path": str(standins.imagenet), "limit": max_images},
        },
        "models": models,
        "pointing": {"shards": 1, "examples": 1},
        "combination": {"shards": 1},
        "meta": {**one_lr, "shards": 1, "max_queries": max_queries},
        "sensitivity": {"lrs": [paper["sensitivity"]["lrs"][0]], "shards": 1,
                        "max_images": max_images},
        # both randomisations and every method, but only the top two blocks and one query: the
        # cascade over all of ResNet50's blocks took 8 minutes of a CPU rehearsal
        "sanity": {"max_queries": 1, "max_blocks": 2},
        # every method and baseline, with a short curve (k = 8) for one query
        "deletion": {"max_queries": 1, "steps": 8},
        # the example figures keep images of one display size; the stand-ins' sizes all differ
        "figures": {"map_examples": 1, "meta_examples": 1},
    }  # fmt: skip
    if scope == "ci":
        config["pointing"]["methods"] = list(CI_POINTING_METHODS)
        # the two deepest combination layers: the grid and combined-layers figures still have
        # a layer each and two layers to combine
        two_layers = {
            model: list(_combination_layers(model, entry)[-2:])
            for model, entry in paper["models"].items()
        }
        config["pointing"]["layers"] = {
            model: two_layers[model] for model in paper["pointing"]["layers"]
        }
        for stage in ("combination", "meta", "sensitivity", "sanity", "deletion"):
            config.setdefault(stage, {})["methods"] = list(CI_STAGE_METHODS)
            if stage != "combination":  # the combination combines the spec's layers
                config[stage]["layers"] = two_layers
        config["sensitivity"]["max_images"] = 1
        # deletion was the heaviest stage of a ci rehearsal (VGG16: 85 s at k = 8, 49 s at k = 4
        # on 2 busy cores): the shortest curve with a point between its ends, the same rules and
        # outputs (the meta queries stay at 4, which include a difficult object)
        config["deletion"]["steps"] = 2
        config["figures"]["qualitative_methods"] = list(CI_STAGE_METHODS)
    return config


def _combination_layers(model: str, entry: dict[str, Any]) -> tuple[str, ...]:
    """The layers a registry model's spec combines (as the workflow resolves its spec)."""
    from backsal.models import get_spec

    return tuple(get_spec(entry.get("registry") or model).combination_layers)


def snakemake_environment() -> dict[str, str]:
    """The environment for this interpreter's Snakemake: its ``bin/`` first on ``PATH``.

    The figure rules run ``jupyter-nbconvert``; called as ``.venv/bin/python`` without an
    activated environment, the jobs would otherwise not find it (exit status 127).
    """
    path = os.environ.get("PATH", "")
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{path}")


def snakemake_command(arguments: Sequence[str]) -> list[str]:
    """This interpreter's Snakemake with ``arguments``."""
    return [sys.executable, "-m", "snakemake", *arguments]


def run_snakemake(arguments: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run this interpreter's Snakemake in the repository with ``arguments``; output captured."""
    return subprocess.run(
        snakemake_command(arguments),
        cwd=REPOSITORY,
        env=snakemake_environment(),
        text=True,
        capture_output=True,
        check=False,
        **kwargs,
    )


def dry_run_rules(configfiles: Sequence[str | Path]) -> set[str]:
    """The rules of the DAG of ``configfiles`` (``snakemake -n``), from its job table."""
    run = run_snakemake(["-n", "--configfile", *map(str, configfiles), "--forceall"])
    if run.returncode != 0:
        raise RuntimeError(f"snakemake -n failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return executed_rules(run.stdout + run.stderr)


def rehearse(
    root: str | Path = "rehearsal",
    *,
    images: int = 3,
    cores: int = 2,
    sizes: SizeProfile = "small",
    device: str = "cpu",
    scope: Scope = "paper",
    extra: Sequence[str] = (),
) -> RehearsalRun:
    """Write the stand-ins, then run the paper's workflow on them; see the module docstring.

    Args:
        root: The rehearsal folder (git-ignored): stand-ins, resources, results, the overlay.
        images: Images per VOC07 / COCO14 stand-in.
        cores: ``snakemake --cores``.
        sizes: Stand-in image sizes (``small``, or ``voc07`` for the real size distribution).
        device: ``cpu`` or ``cuda`` (the saliency jobs' device).
        scope: ``paper`` (every method and layer) or ``ci`` (a few; see :data:`Scope`).
        extra: More snakemake arguments.

    Returns:
        The rules planned and executed, snakemake's exit status and output.
    """
    with staged(root, images=images, sizes=sizes, device=device, scope=scope) as configfiles:
        planned = dry_run_rules(configfiles)
        run = run_snakemake(["--cores", str(cores), "--configfile", *map(str, configfiles), *extra])
    output = run.stdout + run.stderr
    return RehearsalRun(planned, executed_rules(output), run.returncode, output)


@contextmanager
def staged(
    root: str | Path,
    *,
    images: int = 3,
    sizes: SizeProfile = "small",
    device: str = "cpu",
    scope: Scope = "paper",
) -> Iterator[list[Path]]:
    """The stand-ins written, the mirror served and the overlay written while the block runs.

    Yields:
        The config files of the rehearsal (``config/paper.yaml``, then the overlay), for
        ``snakemake --configfile``; the mirror answers until the block ends.
    """
    root = Path(root).resolve()
    standins = prepare(root, images=images, sizes=sizes)
    with serve_folder(standins.root / "files") as url:
        # the mirror's port is no input of any job: a rerun on a new port reruns nothing
        config = overlay(standins, root, url, device=device, scope=scope)
        overlay_path = root / "overlay.yaml"
        overlay_path.write_text(yaml.safe_dump(config, sort_keys=False))
        yield [REPOSITORY / "config" / "paper.yaml", overlay_path]


def executed_rules(log: str) -> set[str]:
    """The rules of the jobs that a Snakemake output ``log`` started."""
    return set(_RULE_LINE.findall(log))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backsal.rehearsal", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--root", default="rehearsal", help="rehearsal folder (git-ignored)")
    parser.add_argument("--images", type=int, default=3, help="images per VOC07/COCO14 stand-in")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--sizes", choices=["small", "voc07"], default="small")
    parser.add_argument(
        "--scope", choices=["paper", "ci"], default="paper",
        help="every method and layer of the paper, or a few (the CI test's)",
    )  # fmt: skip
    args, extra = parser.parse_known_args(argv)
    resumed = (Path(args.root) / "results").is_dir()  # an earlier rehearsal's results are kept
    run = rehearse(
        args.root, images=args.images, cores=args.cores, sizes=args.sizes, scope=args.scope,
        extra=extra,
    )  # fmt: skip
    print(run.log[-4000:])
    anew = f"remove {args.root}/results to rehearse every rule anew"
    if run.returncode == 0 and not run.executed and UP_TO_DATE in run.log:
        # a finished rehearsal rerun: that nothing runs is the check that reruns do nothing
        print(f"up to date: no rule needed to run again ({anew})")
        return 0
    missing = sorted(run.planned - run.executed)
    print(f"rules planned: {len(run.planned)}, executed: {len(run.executed)}")
    if missing and resumed and run.returncode == 0:
        # outputs of an earlier rehearsal that are still up to date are not made again
        print(f"rules up to date from the earlier rehearsal: {', '.join(missing)} ({anew})")
        return 0
    if missing:
        print(f"rules that did not run: {', '.join(missing)}")
    return run.returncode or int(bool(missing))


if __name__ == "__main__":
    raise SystemExit(main())
