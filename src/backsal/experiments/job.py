"""What every workflow script shares: its log, its inputs opened from descriptors, provenance.

A Snakemake ``script:`` gets a ``snakemake`` object; :class:`Job` wraps it so that a script is a
few lines: open the dataset and the model named by the descriptor files (offline), rebuild the
stage's settings from the rule's one ``settings`` param, call one function of
:mod:`backsal.experiments`, write the result with its provenance.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..allocator import reuse_freed_memory

if TYPE_CHECKING:
    import torch

    from .resources import OpenedModel

# torch and the datasets and models (.resources) are imported by the methods that open them:
# the jobs that only read records and write tables, figures or findings run without torch.

__all__ = ["Job", "read_descriptor"]


def read_descriptor(path: str | Path) -> dict[str, Any]:
    """A dataset or model descriptor written by the workflow's first jobs."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


class Job:
    """A workflow job: ``Job(snakemake)``."""

    def __init__(self, snakemake: Any) -> None:
        self.snakemake = snakemake
        self.params = snakemake.params
        self.config = snakemake.config
        self.resources = Path(self.config["resources_dir"])
        self._descriptors: dict[str, dict[str, Any]] = {}

    @contextlib.contextmanager
    def logged(self) -> Iterator[None]:
        """Send this job's output (progress bars included) to its log; set torch's threads and
        let the job reuse the memory it frees (:mod:`backsal.allocator`)."""
        log = Path(self.snakemake.log[0])
        log.parent.mkdir(parents=True, exist_ok=True)
        _use_threads(max(1, int(self.snakemake.threads)))
        allocator = reuse_freed_memory()
        with (
            log.open("w") as handle,
            contextlib.redirect_stdout(handle),
            contextlib.redirect_stderr(handle),
        ):
            logging.basicConfig(stream=handle, level=logging.INFO, force=True)
            logging.getLogger(__name__).info("malloc: %s", allocator)
            try:
                yield
            except Exception:
                import traceback

                traceback.print_exc(file=handle)
                raise
            finally:
                sys.stdout.flush()

    def descriptor(self, key: str) -> dict[str, Any]:
        if key not in self._descriptors:
            self._descriptors[key] = read_descriptor(self.snakemake.input[key])
        return self._descriptors[key]

    @property
    def device(self) -> torch.device:
        """The config's ``device``. Read from the config, not from a param: the same maps on
        another device are the same result, so changing it must not rerun finished jobs."""
        from .resources import pick_device

        return pick_device(str(self.config.get("device", "auto")))

    def dataset(self) -> Any:
        from .resources import open_dataset

        described = self.descriptor("dataset")
        return open_dataset(
            described["name"], described["entry"], self.resources, download=False,
            **self.sources(),
        )  # fmt: skip

    def sources(self) -> dict[str, Any]:
        """Where files come from besides the official URLs: ``mirror`` and ``checksums``."""
        return {
            "mirror": self.config.get("mirror"),
            "checksums": dict(self.config.get("checksums") or {}),
        }

    def model(self) -> OpenedModel:
        from .resources import open_model

        described = self.descriptor("model")
        return open_model(
            described["name"],
            described["entry"],
            self.resources,
            checkpoint=described.get("checkpoint"),
            device=self.device,
            download=False,
            **self.sources(),
        )

    def checksums(self) -> dict[str, str]:
        result = {}
        for key in ("dataset", "model"):
            if key in self.snakemake.input.keys():  # noqa: SIM118 - `in` on a Namedlist tests values
                described = self.descriptor(key)
                result[f"{key}:{described['name']}"] = described["checksum"]
        return result

    def provenance(self, **extra: Any) -> dict[str, Any]:
        from backsal.provenance import provenance_from_snakemake

        seeds = {"seed": int(self.config["seed"])}
        return provenance_from_snakemake(self.snakemake, self.checksums(), seeds, extra)

    def progress(self) -> str:
        """A label for progress bars in the log."""
        wildcards = dict(self.snakemake.wildcards.items())
        return " ".join(f"{k}={v}" for k, v in wildcards.items()) or str(self.snakemake.rule)


def _use_threads(threads: int) -> None:
    """Give torch the job's threads: now if it is imported, else when it is (its thread pools
    read ``OMP_NUM_THREADS`` on import), so a job that imports it late is not oversubscribed."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)
