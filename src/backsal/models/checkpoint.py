"""Reading weight files safely and loading them strictly, with errors that say what to do.

Shared by :mod:`backsal.models.torchray` and :mod:`backsal.models.vision`: checkpoints are read
with ``torch.load(weights_only=True)`` (a file from the internet must not run code), and a state
dict that does not fit the model is reported key by key instead of as PyTorch's generic error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["VERIFIED_ADVICE", "CheckpointError", "load_checkpoint_file", "load_state_strict"]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, corrupt, modified, or for another model or
    data set (both the published models' files and the workflow's small-model checkpoints)."""


_REDOWNLOAD = "delete it and run again to download it anew"


def load_checkpoint_file(
    path: str | os.PathLike[str], *, advice: str = _REDOWNLOAD
) -> dict[str, torch.Tensor]:
    """Read a checkpoint as a flat ``name -> tensor`` dict on the CPU.

    Accepts a plain state dict, one wrapped as ``{"state_dict": ...}`` or ``{"model": ...}``
    (the layouts training scripts save), and DataParallel's ``module.`` key prefix (removed when
    every key has it).

    Args:
        path: The file.
        advice: What the user should do about an unreadable file, for the message.

    Raises:
        CheckpointError: The file cannot be unpickled safely or holds no state dict.
    """
    path = Path(path)
    try:
        # weights_only: a checkpoint from the internet must not run code when loaded
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip/pickle/unpickling errors have no common base class
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a PyTorch state dict ({type(error).__name__}: "
            f"{error}); {advice}"
        ) from error
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
            break
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointError(
            f"checkpoint {path} does not hold a state dict (name -> tensor); {advice}"
        )
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return dict(state)


_DEFAULT_ADVICE = (
    "Is it the checkpoint of this architecture and dataset? Delete the file and run again to "
    "download the right one."
)
VERIFIED_ADVICE = (
    "The file matches its published checksum, so it is the right file and the model definition "
    "or key conversion in backsal does not fit it: please report this error."
)
"""Advice for files whose checksum was verified: the mismatch is on backsal's side."""


def load_state_strict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str = "checkpoint",
    *,
    advice: str = _DEFAULT_ADVICE,
) -> None:
    """Load a state dict strictly, explaining any mismatch.

    BatchNorm's ``num_batches_tracked`` counters may be absent (Caffe has none; they are unused in
    eval mode).

    Args:
        model: The model to fill.
        state: Its state dict (already converted to the model's names and shapes).
        source: What the state comes from, for the message.
        advice: What the user should do about a mismatch.

    Raises:
        CheckpointError: Missing or unexpected keys, or tensors of the wrong shape.
    """
    expected = model.state_dict()
    state = dict(state)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value.clone()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{key}: {tuple(state[key].shape)} instead of {tuple(expected[key].shape)}"
        for key in set(state) & set(expected)
        if state[key].shape != expected[key].shape
    )
    if missing or unexpected or wrong:
        # The first mismatch leads, on the first line: a one-line report (the CLI's) names it.
        # In the model's own order (the sorted lists below are for reading, not for "first").
        first = (
            next(
                (
                    f"missing key {key}"
                    if key not in state
                    else f"{key}: shape {tuple(state[key].shape)} instead of {tuple(value.shape)}"
                    for key, value in expected.items()
                    if key not in state or state[key].shape != value.shape
                ),
                None,
            )
            or f"unexpected key {next(k for k in state if k not in expected)}"
        )
        parts = [f"{source} does not fit {type(model).__name__} (first mismatch: {first}):"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:20])}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}")
        if wrong:
            parts.append(f"wrong shapes ({len(wrong)}): {'; '.join(wrong[:20])}")
        parts.append(advice)
        raise CheckpointError("\n  ".join(parts))
    model.load_state_dict(state, strict=True)
