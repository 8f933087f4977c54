"""The fused channel-statistics kernel (GPU) equals the eager reference statistics.

The kernel is Triton; here it runs in Triton's interpreter on the CPU (a subprocess, since the
interpreter is chosen when the kernel is defined), on the exact code the GPU compiles.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton (shipped with PyTorch's CUDA wheels) is not installed")

SRC = Path(__file__).resolve().parents[1] / "src"

SCRIPT = textwrap.dedent(
    """
    import torch, torchvision
    import backsal
    from backsal import _fused, methods

    assert _fused.available(torch.zeros(1, 1, 1, 1)), "interpreter not active"
    torch.manual_seed(0)

    def close(got, want, what, floor=1e-30):
        scale = want.abs().max().clamp_min(floor)
        err = float((got.double() - want.double()).abs().max() / scale)
        assert err < TOL, f"{what}: relative error {err:.2e}"

    # every statistic, every subset size, odd shapes, non-contiguous input, half precision
    for dtype, TOL in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
        for shape in ((3, 37, 9, 11), (2, 5, 1, 1), (1, 70, 23, 1)):
            x = torch.randn(shape).to(dtype)
            g = torch.randn(shape).to(dtype)
            x = x.to(memory_format=torch.channels_last)
            keys = list(_fused.KEYS)
            for subset in (keys, keys[::3], ["x.mean_g"], ["xg.pos_sq", "g.min"]):
                got = _fused.channel_statistics(x, g, subset)
                assert sorted(got) == sorted(subset)
                for key in subset:
                    partial, _ = methods._STATISTICS[key]
                    want = partial(methods._Chunk(x.float(), g.float()))
                    assert got[key].dtype == dtype and got[key].shape == want.shape
                    close(got[key].float(), want, f"{key} {dtype} {shape}")

    # the engine: every named method and a grid row, fused against eager
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    images, targets = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    names = [m for m in backsal.NAMED_METHODS if m != "norm_grad_proper"] + [
        "grad_cam", "scaling/max_abs", "conv1x1/filter_norm", "bias/norm"]
    layers = ["relu", "layer1", "layer3.0", "layer4"]
    TOL = 1e-5
    fused = backsal.saliency(model, images, targets, names, layers)
    backsal.set_options(fused=False)
    eager = backsal.saliency(model, images, targets, names, layers)
    for name in names:
        for layer in layers:
            # c-MWP is the difference of two MWP maps that nearly cancel at a 1x1 layer: compare
            # it on the scale of those maps
            floor = eager["excitation_backprop"][layer].abs().max() if "contrastive" in name else 1e-30
            close(fused[name][layer], eager[name][layer], f"{name} at {layer}", floor)
    print("fused == eager")
    """
)


def test_fused_statistics_equal_the_eager_reference():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fused == eager" in done.stdout


def test_a_kernel_that_cannot_run_hands_over_to_the_eager_code(monkeypatch):
    import torch

    from backsal import _fused, methods

    def broken(*_args, **_kwargs):
        raise RuntimeError("no compiler for this GPU")

    monkeypatch.setattr(_fused, "available", lambda x: not _fused._BROKEN)
    monkeypatch.setattr(_fused, "channel_statistics", broken)
    monkeypatch.setattr(_fused, "_BROKEN", False)
    x, g = torch.randn(2, 5, 3, 4), torch.randn(2, 5, 3, 4)
    data = methods.LayerData(x=x, g=g)
    with pytest.warns(RuntimeWarning, match="no compiler for this GPU.*BACKSAL_FUSED=0"):
        data.prepare(["g.max", "xg.sum"])
    assert _fused._BROKEN is True
    torch.testing.assert_close(data.stats["xg.sum"], (x * g).sum(1))
    torch.testing.assert_close(data.stats["g.max"], g.amax(1))
