"""Time the paper's workflow stage by stage on stand-ins, and extrapolate the whole paper.

    python bench/paper_rehearsal.py --device cpu                 # small, a few minutes' worth
    python bench/paper_rehearsal.py --device cuda --voc-sized    # 4,952 VOC07-sized stand-ins

Runs :func:`backsal.rehearsal.rehearse` (config/paper.yaml with the stand-in overlay), then reads
the rules' ``benchmark:`` files and prints each stage's wall time per (dataset, model), and an
estimate of the full paper's time on this device: each stage's time per evaluated image (or
query, for meta-saliency) times the official counts (VOC07 test 4,952 images, COCO14 val 40,504,
ImageNet val 50,000) and the paper's learning-rate grids over the rehearsal's. Job start-up (model
loading) is included in every job's time, so the estimate errs high. Random weights and noise
images cost the same arithmetic as the real ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import defaultdict
from pathlib import Path

import yaml

from backsal.rehearsal import REPOSITORY, rehearse

OFFICIAL_IMAGES = {"voc07": 4952, "coco14": 40504, "imagenet_val": 50000}


def _stage_times(results: Path) -> dict[tuple[str, str, str], float]:
    """Seconds per (stage, dataset, model), summed over backward rules and shards."""
    times: dict[tuple[str, str, str], float] = defaultdict(float)
    for tsv in (results / "benchmarks").rglob("*.tsv"):
        parts = tsv.relative_to(results / "benchmarks").parts
        if len(parts) < 3:
            continue
        with tsv.open() as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        # shards: <stage>/<dataset>/<model>/.../shard-N.tsv; one job per run: <model>.tsv
        model = parts[2].removesuffix(".tsv")
        times[(parts[0], parts[1], model)] += float(row["s"])
    return times


def _scale(stage: str, dataset: str, results: Path, overlay: dict, paper: dict) -> float:
    described = json.loads((results / "datasets" / f"{dataset}.json").read_text())
    images, queries = described["images"], described.get("queries") or described["images"]
    official = OFFICIAL_IMAGES[dataset]
    if stage == "meta":
        done = min(overlay["meta"]["max_queries"], queries)
        lrs = len(paper["meta"]["lrs"]) / len(overlay["meta"]["lrs"])
        return official * (queries / images) / done * lrs
    if stage == "sensitivity":
        lrs = len(paper["sensitivity"]["lrs"]) / len(overlay["sensitivity"]["lrs"])
        return official / min(overlay["sensitivity"]["max_images"], images) * lrs
    return official / images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--voc-sized",
        action="store_true",
        help="4,952 stand-in images per pointing dataset, VOC07's size distribution",
    )
    parser.add_argument("--images", type=int, default=2, help="images per pointing stand-in")
    parser.add_argument("--root", default="rehearsal/bench")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="do not run: report on the rehearsal already in --root",
    )
    args = parser.parse_args()
    images, sizes = (4952, "voc07") if args.voc_sized else (args.images, "small")
    start = time.perf_counter()
    if not args.report_only:
        run = rehearse(args.root, images=images, cores=args.cores, sizes=sizes, device=args.device)
        if run.returncode != 0:
            raise SystemExit(f"the rehearsal failed:\n{run.log[-4000:]}")
    total = time.perf_counter() - start
    root = Path(args.root).resolve()
    results = root / "results"
    overlay = yaml.safe_load((root / "overlay.yaml").read_text())
    paper = yaml.safe_load((REPOSITORY / "config" / "paper.yaml").read_text())
    print(f"{time.strftime('%Y-%m-%d')}  device={args.device}  stand-in images={images} ({sizes})")
    if "methods" in overlay.get("pointing", {}):
        print(
            "note: this rehearsal computed a subset of the paper's methods and layers "
            "(scope ci); the estimate below covers that subset only"
        )
    if not args.report_only:
        print(f"rehearsal wall time (stand-ins reused if present): {total:.0f} s")
    print(f"{'stage':<12} {'dataset':<13} {'model':<18} {'rehearsal s':>11} {'paper h':>9}")
    estimate = 0.0
    for (stage, dataset, model), seconds in sorted(_stage_times(results).items()):
        paper_s = seconds * _scale(stage, dataset, results, overlay, paper)
        estimate += paper_s
        print(f"{stage:<12} {dataset:<13} {model:<18} {seconds:>11.1f} {paper_s / 3600:>9.2f}")
    print(f"estimated whole paper on this device: {estimate / 3600:.2f} h of job time")


if __name__ == "__main__":
    main()
