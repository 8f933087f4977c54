import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))  # tests/reference.py

# Two threads per test process; under pytest-xdist (`make test` runs one worker per CPU) the
# machine's CPUs are shared among the workers instead, so that they do not oversubscribe it.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, torch.get_num_threads() // _WORKERS)))

#: The end-to-end modules, longest first. `make test` hands whole modules to its workers in
#: collection order (``--dist loadfile --no-loadscope-reorder``): collected first, these start
#: at once on separate workers (the rehearsal's and the SLURM cluster's waits overlap the other
#: worker's tests), and the unit tests fill in around them instead of leaving one of them last.
_END_TO_END_FIRST = ("test_rehearsal.py", "test_slurm.py", "test_workflow.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return (
            _END_TO_END_FIRST.index(name) if name in _END_TO_END_FIRST else len(_END_TO_END_FIRST)
        )

    items.sort(key=rank)  # stable: every module keeps its own order


class TinyNet(nn.Module):
    """A small CNN that exercises every geometry the engine handles.

    Grouped and strided conv, a dilated depthwise conv with reflect padding, batch norm, a
    functional ReLU, a module ReLU reused at two call sites, a skip sum and a linear head.
    """

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)  # reused below
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
        self.bn2 = nn.BatchNorm2d(6)
        self.conv3 = nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=6, padding_mode="reflect")
        self.conv4 = nn.Conv2d(6, 6, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        y = self.relu(self.bn2(self.conv2(x)))
        z = torch.nn.functional.relu(self.conv3(y))
        z = self.conv4(z)
        z += y  # in-place skip sum
        z = torch.relu(z)
        return self.fc(self.pool(z).flatten(1))


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(c, generator=generator) * 0.1)
    return model


@pytest.fixture
def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return randomize_batchnorm(TinyNet()).double().eval()


@pytest.fixture
def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, 9, 11, generator=generator, dtype=torch.float64)
    return images, torch.tensor([0, 3, 4])
