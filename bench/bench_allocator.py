"""glibc's malloc left as it is against tuned by ``backsal.allocator.reuse_freed_memory``.

The workflow's jobs call ``reuse_freed_memory()`` when they start (``Job.logged``). Tuning is
process-wide and cannot be undone, so each side runs in a fresh child process, the two sides
alternating, and the best of ``--rounds`` rounds is kept per side. Two workloads, one thread each
(as a default-run job on two cores), 64² canvases as the offline benchmark's:

* ``train``: ``train_model`` on random canvases, per step (the workflow's batch of 64, Adam, BCE
  loss, deterministic kernels), after three warm-up steps;
* ``maps``: ``backsal.saliency`` on batches of 128 canvases, five named methods at every probed
  layer and the input, upsampled to 64² (the pointing job's shape of work).

    python bench/bench_allocator.py                  # both workloads, 3 rounds
    python bench/bench_allocator.py --workloads train --rounds 5

Prints, per workload and small model, each side's milliseconds and minor page faults per step
and the ratio (default / tuned: above 1 means tuning helps); writes ``bench/out/allocator.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

import torch

from backsal.allocator import reuse_freed_memory
from common import machine, write

SIDES = ("default", "tuned")
WORKLOADS = ("train", "maps")
MODELS = ("small_vgg", "small_resnet")


def _train_steps(model_name: str, steps: int) -> tuple[float, float]:
    from backsal.models.train import TrainConfig, build_small_model, train_model

    model = build_small_model(model_name, 10, 0)
    config = TrainConfig(epochs=1)  # the workflow's batch size, optimizer and rate
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (config.batch_size * steps, 3, 64, 64), dtype=torch.uint8,
                           generator=generator)  # fmt: skip
    labels = (torch.rand(len(images), 10, generator=generator) > 0.7).float()
    train_model(model, images[: 3 * config.batch_size], labels[: 3 * config.batch_size], config)

    def epoch() -> None:
        train_model(model, images, labels, config)

    seconds, faults = _per_step(epoch, 1)
    return seconds / steps, faults / steps


def _map_batches(model_name: str, steps: int) -> tuple[float, float]:
    import backsal
    from backsal.models.small import SMALL_MODELS
    from backsal.models.train import build_small_model

    model = build_small_model(model_name, 10, 0).eval()
    layers = [*SMALL_MODELS[model_name].probe_layers, "input"]
    images = torch.rand(128, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    targets = torch.arange(128) % 10
    methods = ["gradient", "linear_approx", "norm_grad", "norm_grad_selective", "grad_cam"]

    def step() -> None:
        backsal.saliency(model, images, targets, methods=methods, layers=layers, size=(64, 64))

    step()
    return _per_step(step, steps)


def _per_step(step: Any, steps: int) -> tuple[float, float]:
    """Seconds and minor page faults per call of ``step``."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    return seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps


def child(side: str, workload: str, model: str, steps: int) -> dict[str, float]:
    """One side of one workload for one model, in this (fresh) process."""
    torch.set_num_threads(1)
    if side == "tuned":
        status = reuse_freed_memory()
        if status != "tuned":
            raise SystemExit(f"reuse_freed_memory() {status}: nothing to compare here")
    run = _train_steps if workload == "train" else _map_batches
    seconds, faults = run(model, steps)
    return {"seconds": seconds, "faults": faults}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=3, help="child processes per side")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per child")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # side, workload, model
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.steps)))
        return

    results: dict[str, Any] = {}
    for workload in args.workloads:
        for model in MODELS:
            best = {side: {"seconds": float("inf"), "faults": 0.0} for side in SIDES}
            for _ in range(args.rounds):
                for side in SIDES:
                    command = [sys.executable, __file__, "--child", side, workload, model]
                    command += ["--steps", str(args.steps)]
                    output = subprocess.run(command, check=True, capture_output=True, text=True)
                    run = json.loads(output.stdout.splitlines()[-1])
                    if run["seconds"] < best[side]["seconds"]:
                        best[side] = run
            row = {
                "default_ms": round(1e3 * best["default"]["seconds"], 1),
                "tuned_ms": round(1e3 * best["tuned"]["seconds"], 1),
                "ratio": round(best["default"]["seconds"] / best["tuned"]["seconds"], 3),
                "default_faults": round(best["default"]["faults"]),
                "tuned_faults": round(best["tuned"]["faults"]),
            }
            results[f"{workload} {model}"] = row
            print(
                f"{workload:5s} {model:12s} default {row['default_ms']:7.1f} ms "
                f"({row['default_faults']:6d} faults)  tuned {row['tuned_ms']:7.1f} ms "
                f"({row['tuned_faults']:6d} faults) per step  ratio {row['ratio']:.3f}x",
                flush=True,
            )

    payload = {"date": time.strftime("%Y-%m-%d"), "rounds": args.rounds, "steps": args.steps,
               "machine": machine(torch.device("cpu")), "results": results}  # fmt: skip
    print(f"wrote {write('allocator', payload)}")


if __name__ == "__main__":
    main()
