"""The package's import structure: no import cycle, private names stay in their package, and the
workflow's table, figure and findings jobs import no torch.

The first two read the import statements with :mod:`ast` (also those inside functions: a deferred import
is how a cycle hides), so nothing is imported to check them.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

# Tests of private helpers: the one exception to "outside a package, public API only".
PRIVATE_HELPER_TESTS = {
    "tests/test_per_sample.py": "per-row convolutions of backsal._per_sample against a loop",
    "tests/test_fused.py": "the Triton kernel of backsal._fused against the eager statistics",
    "tests/test_engine.py": "backsal._engine._lowest, the probes a backward must reach",
    "tests/test_metrics_pointing.py": "the window and grid hit tests of backsal.metrics.pointing",
    "tests/test_data_coco.py": "the RLE counts decoder of backsal.data.coco against pycocotools",
    "tests/test_report_maps.py": "the combined-layer maps of backsal.report.maps against combine()",
    "tests/test_finite.py": "backsal._finite's sum screen against the elementwise isfinite",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path) -> list[str]:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return parts[:-1]


MODULES = {_module_name(p): p for p in (SRC / "backsal").rglob("*.py")}


def _imports(path: Path, package: list[str] | None) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import in ``path``; relative ones resolved in ``package``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert package is not None, f"{path}: relative import outside the package"
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, [alias.name for alias in node.names]))
    return found


def _edges() -> dict[str, set[str]]:
    """backsal module -> the backsal modules it imports (``from pkg import sub`` is ``pkg.sub``)."""
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for module, names in _imports(path, _package_of(path)):
            targets = [f"{module}.{n}" if f"{module}.{n}" in MODULES else module for n in names]
            edges[name].update(t for t in targets or [module] if t in MODULES and t != name)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    edges = _edges()
    assert edges["backsal.explain"] >= {"backsal._engine"}  # the reader sees real imports
    assert _cycles(edges) == []


def _private_owner(module: str, name: str | None) -> str | None:
    """The package that owns a private module or name, or None if the import is public."""
    parts = module.split(".") + ([name] if name else [])
    for i, part in enumerate(parts):
        if part.startswith("_") and not (part.startswith("__") and part.endswith("__")):
            owner = parts[:i]
            if ".".join(parts[: i + 1]) not in MODULES and ".".join(owner) in MODULES:
                # a private name in a module: it belongs to that module's package
                path = MODULES[".".join(owner)]
                return (
                    ".".join(_package_of(path)) if path.name != "__init__.py" else ".".join(owner)
                )
            return ".".join(owner)
    return None


def _files() -> list[Path]:
    return sorted(
        [*(SRC / "backsal").rglob("*.py"), *(ROOT / "tests").rglob("*.py"),
         *(ROOT / "bench").rglob("*.py"), *(ROOT / "workflow").rglob("*.py")]
    )  # fmt: skip


def _violations() -> list[str]:
    found = []
    for path in _files():
        inside = path.is_relative_to(SRC)
        package = _package_of(path) if inside else None
        where = ".".join(package) if package else None
        rel = path.relative_to(ROOT).as_posix()
        for module, names in _imports(path, package):
            if module != "backsal" and not module.startswith("backsal."):
                continue
            for name in names or [None]:
                owner = _private_owner(module, name)
                # a package's private names are its own and its subpackages' to use
                inside_owner = where is not None and (
                    where == owner or where.startswith(f"{owner}.")
                )
                if owner is not None and not inside_owner:
                    found.append(f"{rel}: {module}" + (f".{name}" if name else ""))
    return found


def test_private_names_stay_in_their_package():
    """workflow/, bench/ and tests/ use the public API; a package's private modules and names
    are imported only inside that package. Tests of private helpers are the named exception."""
    bad = [v for v in _violations() if v.split(":")[0] not in PRIVATE_HELPER_TESTS]
    assert bad == []


@pytest.mark.parametrize("test_file", sorted(PRIVATE_HELPER_TESTS))
def test_each_named_exception_still_needs_its_exception(test_file):
    assert any(v.startswith(f"{test_file}:") for v in _violations()), (
        f"{test_file} no longer imports private names: drop it from PRIVATE_HELPER_TESTS"
    )


# --- the torch-free path -----------------------------------------------------------------------

#: The workflow's jobs that read records and write tables, figures or findings: they import no
#: torch (about 3 s of each job's start-up), so what they import must not either. The map-figure
#: notebook (``maps``, which also draws the qualitative figures) combines maps and is not among
#: them.
TORCH_FREE_SCRIPTS = (
    "evaluate",
    "merge_tables",
    "findings",
    "layer_weights",
    "reference_comparison",
)
TORCH_FREE_NOTEBOOKS = (
    "pointing", "combination", "sensitivity", "meta", "faithfulness",
)  # fmt: skip
#: What the jobs' pickled parameters and the package's light entry points import.
TORCH_FREE_MODULES = (
    "backsal",
    "backsal.names",
    "backsal.options",
    "backsal.provenance",
    "backsal.evaluation",
    "backsal.experiments",
    "backsal.experiments.settings",
    "backsal.experiments.job",
    "backsal.experiments.evaluate",
    "backsal.metrics",
    "backsal.metrics.scores",
    "backsal.models",
    "backsal.models.layers",
    "backsal.report.tables",
    "backsal.report.figures",
    "backsal.report.findings",
    "backsal.report.faithfulness",
    "backsal.report.scatter",
)

_BLOCK_TORCH = """
import sys

class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "torchvision", "triton"):
            raise ImportError(f"{name} imported on the torch-free path")

sys.meta_path.insert(0, _NoTorch())
"""


def _top_level_imports(source: str) -> list[str]:
    return [
        ast.unparse(node)
        for node in ast.parse(source).body
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]


def _notebook_imports(path: Path) -> list[str]:
    import json

    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return [line.strip() for line in _top_level_imports(code)]


def _run_without_torch(statements: list[str]) -> subprocess.CompletedProcess[str]:
    program = _BLOCK_TORCH + "\n".join(statements) + "\nassert 'torch' not in sys.modules\n"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, cwd=ROOT
    )


def test_table_figure_and_findings_jobs_import_no_torch():
    statements = [f"import {module}" for module in TORCH_FREE_MODULES]
    for script in TORCH_FREE_SCRIPTS:
        path = ROOT / "workflow" / "scripts" / f"{script}.py"
        statements += _top_level_imports(path.read_text(encoding="utf-8"))
    for notebook in TORCH_FREE_NOTEBOOKS:
        statements += _notebook_imports(ROOT / "workflow" / "notebooks" / f"{notebook}.py.ipynb")
    assert any("backsal.report" in s for s in statements)  # the notebooks' imports were read
    run = _run_without_torch(statements)
    assert run.returncode == 0, run.stderr[-3000:]


# Each attempt is recorded as well as refused: code that catches the ImportError (an optional
# torchvision feature) would otherwise pay for the import on a real install unseen.
_BLOCK_TORCHVISION = """
import sys

_attempts = []

class _NoTorchvision:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "torchvision":
            _attempts.append(name)
            raise ImportError(f"{name} imported for a model without torchvision modules")

sys.meta_path.insert(0, _NoTorchvision())
"""


def test_a_model_without_torchvision_modules_never_imports_torchvision():
    # torchvision costs 1.5 s per process (it imports torch._dynamo): the model registry, the
    # workflow's settings and every job of the small VGG (training, maps, metrics) do without
    program = (
        _BLOCK_TORCHVISION
        + """
import torch
import backsal
from backsal.experiments import WorkflowSettings, run_pointing
from backsal.models import available_models, get_spec
from backsal.models.train import build_small_model, train_model, TrainConfig

names = available_models()
assert {"resnet50_voc07", "resnet50_imagenet", "small_resnet"} <= set(names), names
for name in names:
    get_spec(name)
model = build_small_model("small_vgg", num_classes=3)
images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
maps = backsal.saliency(
    model, images.float() / 255, torch.tensor([0, 1, 2, 0]),
    methods=["grad_cam", "norm_grad", "guided_backprop"], layers=["features.2", "input"],
)
assert maps["norm_grad"]["features.2"].shape == (4, 1, 32, 32)
# torchvision's cost is mostly torch._dynamo's, which the engine does without (torch.optim's
# optimizers import it, so training comes after)
assert "torch._dynamo" not in sys.modules
train_model(model, images, torch.eye(3)[[0, 1, 2, 0]], TrainConfig(epochs=1, batch_size=2))
assert not _attempts, _attempts
assert "torchvision" not in sys.modules
"""
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    run = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert run.returncode == 0, run.stderr[-3000:]


def test_the_caffe_resnet50_class_is_published_under_its_module():
    import pickle

    from backsal.models import torchray

    model = torchray.build_resnet50_fc(3)
    assert type(model) is torchray.FullyConvResNet50
    assert torchray.FullyConvResNet50.__qualname__ == "FullyConvResNet50"
    assert type(pickle.loads(pickle.dumps(model))) is torchray.FullyConvResNet50
    with pytest.raises(AttributeError, match="no attribute 'FullyConvResNet51'"):
        torchray.FullyConvResNet51  # noqa: B018


def test_the_torch_free_check_fails_on_a_torch_import():
    run = _run_without_torch(["import backsal.methods"])
    assert run.returncode != 0 and "imported on the torch-free path" in run.stderr


def test_lazy_package_names_resolve_to_their_definitions():
    import backsal
    import backsal.combination
    import backsal.experiments
    import backsal.metrics
    import backsal.models

    # the function, not the module of the same (former) name; the options context manager
    assert backsal.combine is backsal.combination.combine
    assert callable(backsal.options) and backsal.options.__module__ == "backsal.options"
    for package in (backsal, backsal.experiments, backsal.metrics, backsal.models):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
        assert set(package.__all__) <= set(dir(package))
        with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
            package.nonexistent  # noqa: B018
