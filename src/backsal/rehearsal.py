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
import re
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from backsal.data.standins import SizeProfile, StandIns, write_standins
from backsal.data.voc import VOC07_TEST_ARCHIVE

__all__ = [
    "REPOSITORY",
    "RehearsalRun",
    "dry_run_rules",
    "overlay",
    "prepare",
    "rehearse",
    "run_snakemake",
    "serve_folder",
]

#: The checkout whose Snakefile is rehearsed.
REPOSITORY = Path(__file__).resolve().parents[2]
#: The registry model fetched through the mirror (the others through ``checkpoint``).
MIRRORED_MODEL = "resnet50_imagenet"
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
    return {
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
    }  # fmt: skip


def run_snakemake(arguments: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run this interpreter's Snakemake in the repository with ``arguments``; output captured."""
    command = [sys.executable, "-m", "snakemake", *arguments]
    return subprocess.run(
        command, cwd=REPOSITORY, text=True, capture_output=True, check=False, **kwargs
    )


def dry_run_rules(configfiles: Sequence[str | Path]) -> set[str]:
    """The rules of the DAG of ``configfiles`` (``snakemake -n``), from its job table."""
    run = run_snakemake(["-n", "--configfile", *map(str, configfiles), "--forceall"])
    if run.returncode != 0:
        raise RuntimeError(f"snakemake -n failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return set(_RULE_LINE.findall(run.stdout + run.stderr))


def rehearse(
    root: str | Path = "rehearsal",
    *,
    images: int = 3,
    cores: int = 2,
    sizes: SizeProfile = "small",
    device: str = "cpu",
    extra: Sequence[str] = (),
) -> RehearsalRun:
    """Write the stand-ins, then run the paper's workflow on them; see the module docstring.

    Args:
        root: The rehearsal folder (git-ignored): stand-ins, resources, results, the overlay.
        images: Images per VOC07 / COCO14 stand-in.
        cores: ``snakemake --cores``.
        sizes: Stand-in image sizes (``small``, or ``voc07`` for the real size distribution).
        device: ``cpu`` or ``cuda`` (the saliency jobs' device).
        extra: More snakemake arguments.

    Returns:
        The rules planned and executed, snakemake's exit status and output.
    """
    root = Path(root).resolve()
    standins = prepare(root, images=images, sizes=sizes)
    with serve_folder(standins.root / "files") as url:
        config = overlay(standins, root, url, device=device)
        overlay_path = root / "overlay.yaml"
        overlay_path.write_text(yaml.safe_dump(config, sort_keys=False))
        configfiles = [REPOSITORY / "config" / "paper.yaml", overlay_path]
        planned = dry_run_rules(configfiles)
        run = run_snakemake(["--cores", str(cores), "--configfile", *map(str, configfiles), *extra])
    output = run.stdout + run.stderr
    return RehearsalRun(planned, set(_RULE_LINE.findall(output)), run.returncode, output)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backsal.rehearsal", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--root", default="rehearsal", help="rehearsal folder (git-ignored)")
    parser.add_argument("--images", type=int, default=3, help="images per VOC07/COCO14 stand-in")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--sizes", choices=["small", "voc07"], default="small")
    args, extra = parser.parse_known_args(argv)
    run = rehearse(args.root, images=args.images, cores=args.cores, sizes=args.sizes, extra=extra)
    print(run.log[-4000:])
    missing = sorted(run.planned - run.executed)
    print(f"rules planned: {len(run.planned)}, executed: {len(run.executed)}")
    if missing:
        print(f"rules that did not run: {', '.join(missing)}")
    return run.returncode or int(bool(missing))


if __name__ == "__main__":
    raise SystemExit(main())
