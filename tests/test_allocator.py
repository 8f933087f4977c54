"""backsal.allocator: a workflow job's freed memory serves its next allocations.

Tuning is process-wide and final, so the processes that tune run apart from the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from backsal.allocator import TUNED_BY_ENVIRONMENT, reuse_freed_memory

# Allocates, touches and frees 64 MiB through the C library four times and prints the minor page
# faults of the last three; with "tuned" as its argument it tunes malloc first.
_CYCLES = """
import ctypes, json, resource, sys
from backsal.allocator import reuse_freed_memory
status = reuse_freed_memory() if sys.argv[1] == "tuned" else "default"
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 * 2**20
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"status": status, "faults": sum(faults[1:])}))
"""

_GLIBC = sys.platform == "linux" and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")


def _cycles(side: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k not in (*TUNED_BY_ENVIRONMENT, "LD_PRELOAD")}
    output = subprocess.run(
        [sys.executable, "-c", _CYCLES, side], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(output.stdout)


@pytest.mark.skipif(not _GLIBC, reason="tunes glibc's malloc only")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    default, tuned = _cycles("default"), _cycles("tuned")
    assert tuned["status"] == "tuned"
    # untuned, each 64 MiB block is a fresh mapping: at least one fault per 2 MiB huge page,
    # 16384 per block with 4 KiB pages; tuned, the freed block is the next one
    assert default["faults"] >= 3 * 32
    assert tuned["faults"] <= default["faults"] / 10


@pytest.mark.parametrize("name", TUNED_BY_ENVIRONMENT)
def test_an_environment_that_tunes_malloc_is_left_alone(monkeypatch, name):
    for other in TUNED_BY_ENVIRONMENT:
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(name, "1")
    status = reuse_freed_memory()
    if _GLIBC:
        assert status == f"left alone: the environment sets {name}"
    else:
        assert status == "left alone: malloc is not glibc's"


def test_a_preloaded_allocator_is_left_alone(monkeypatch):
    for name in TUNED_BY_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LD_PRELOAD", "libjemalloc.so.2")
    assert reuse_freed_memory().startswith("left alone:")
