"""Training, evaluation and checkpoints of the small models of the offline benchmark.

The paper uses VGG16 / ResNet50 fine-tuned for multi-label classification on VOC07 and COCO14
(docs/methods.md §6.5). The offline benchmark trains :mod:`backsal.models.small` the same way on
:mod:`backsal.data.synthetic`: one sigmoid per class with binary cross-entropy, Adam or SGD with
momentum, a fixed seed. Test quality is the mean over classes of the average precision
(as ``sklearn.metrics.average_precision_score``), the usual multi-label mAP of VOC classifiers.

Determinism: the initial weights and the shuffling come from ``seed`` alone, deterministic
algorithms are requested while training, and the global random state of the caller is left as
it was; results are bit-identical for the same device, thread count and torch version.

Checkpoints carry their provenance (model name, number of classes, training config, seed, data
hash, metrics, torch / torchvision / backsal versions) and a sha256 of the file, written beside it
as ``<file>.sha256`` in ``sha256sum`` format. Loading checks the hash, the format, the data hash
and every parameter name and shape, and says what to do when one does not match.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

import backsal
from backsal.models.checkpoint import CheckpointError
from backsal.models.small import SMALL_MODELS, small_transform
from backsal.provenance import file_digest

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "LoadedCheckpoint",
    "TrainConfig",
    "TrainResult",
    "build_small_model",
    "check_state_dict",
    "load_checkpoint",
    "mean_average_precision",
    "predict_logits",
    "save_checkpoint",
    "train_model",
]

CHECKPOINT_FORMAT = "backsal.small_model"
CHECKPOINT_VERSION = 1
# what load_checkpoint reads besides format and version
_PAYLOAD_KEYS = ("model", "num_classes", "state_dict", "provenance")

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train_model`.

    Attributes:
        epochs: Passes over the training set.
        batch_size: Images per step.
        optimizer: ``"adam"`` or ``"sgd"`` (with ``momentum``).
        lr: Peak learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty (Adam's classic form, SGD's usual one).
        schedule: ``"cosine"`` (decay to 0 over all steps) or ``"constant"``.
        seed: Seed of the initial weights and of the shuffling.
    """

    epochs: int = 10
    batch_size: int = 64
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")


@dataclass
class TrainResult:
    """What :func:`train_model` measured.

    Attributes:
        epoch_losses: Mean training loss of each epoch.
        step_losses: Loss of every step.
        seconds: Wall-clock training time (excluding evaluation).
        test_map: Test mAP after training, if test data were given.
    """

    epoch_losses: list[float] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    test_map: float | None = None


@dataclass
class LoadedCheckpoint:
    """A model restored by :func:`load_checkpoint`, with its provenance and file hash."""

    model: nn.Module
    model_name: str
    num_classes: int
    provenance: dict[str, Any]
    sha256: str


def build_small_model(name: str, num_classes: int = 10, seed: int = 0) -> nn.Module:
    """A small model with initial weights drawn from ``seed`` (the caller's RNG is untouched)."""
    if name not in SMALL_MODELS:
        raise KeyError(f"unknown small model {name!r}; known: {sorted(SMALL_MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SMALL_MODELS[name].builder(num_classes)


def train_model(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    transform: Transform = small_transform,
    device: torch.device | str = "cpu",
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place for multi-label classification with BCE.

    Args:
        model: The network; moved to ``device`` and left in eval mode.
        images: ``uint8 [N, 3, H, W]`` training images (kept on the CPU, moved per batch).
        labels: ``[N, C]`` multi-hot labels.
        config: Hyper-parameters and seed.
        transform: Preprocessing applied to a ``uint8`` batch ``[B, 3, H, W]`` (it must be
            element-wise or batch-aware, as :func:`small_transform` is).
        device: Where to train.
        test: Optional ``(images, labels)`` to report the test mAP after training.
        log: Optional callback receiving one line per epoch.

    Returns:
        The losses, the training time and the test mAP.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 [N, 3, H, W], got {images.dtype} {images.shape}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} label rows")
    device = torch.device(device)
    model.to(device)
    labels = labels.to(torch.float32)
    steps_per_epoch = -(-len(images) // config.batch_size)
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(config, steps_per_epoch * config.epochs)
    )
    generator = torch.Generator().manual_seed(config.seed)
    loss_fn = nn.BCEWithLogitsLoss()
    result = TrainResult()

    start = time.perf_counter()
    with _deterministic(device):
        model.train()
        for epoch in range(config.epochs):
            order = torch.randperm(len(images), generator=generator)
            total = 0.0
            for batch in order.split(config.batch_size):
                inputs = transform(images[batch].to(device, non_blocking=True))
                loss = loss_fn(model(inputs), labels[batch].to(device, non_blocking=True))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                value = float(loss.detach())
                result.step_losses.append(value)
                total += value * len(batch)
            result.epoch_losses.append(total / len(images))
            if log is not None:
                log(f"epoch {epoch + 1}/{config.epochs}: loss {result.epoch_losses[-1]:.4f}")
        model.eval()
    result.seconds = time.perf_counter() - start

    if test is not None:
        scores = predict_logits(model, test[0], transform, device)
        result.test_map = mean_average_precision(scores, test[1])[0]
    return result


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    transform: Transform = small_transform,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> torch.Tensor:
    """Logits ``[N, C]`` (on the CPU) of ``model`` in eval mode for ``uint8`` images."""
    was_training = model.training
    model.eval()
    outputs = [
        model(transform(chunk.to(device))).float().cpu() for chunk in images.split(batch_size)
    ]
    model.train(was_training)
    return torch.cat(outputs)


def mean_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, list[float]]:
    """Mean over classes of the average precision, as ``sklearn.metrics.average_precision_score``.

    A class without a positive example has no defined AP; it is reported as NaN in the
    per-class list and left out of the mean (an error if no class has a positive).

    Returns:
        ``(mAP, per-class AP)``.
    """
    scores_np = scores.detach().cpu().double().numpy()
    labels_np = labels.detach().cpu().numpy() > 0.5
    if scores_np.shape != labels_np.shape:
        raise ValueError(f"scores {scores_np.shape} and labels {labels_np.shape} differ in shape")
    if not np.isfinite(scores_np).all():
        raise ValueError(
            "scores hold NaN or infinite values: the model diverged; train it again with a "
            "lower learning rate"
        )
    per_class = [
        _average_precision(scores_np[:, c], labels_np[:, c])
        if labels_np[:, c].any()
        else float("nan")
        for c in range(labels_np.shape[1])
    ]
    defined = [ap for ap in per_class if not np.isnan(ap)]
    if not defined:
        raise ValueError("no class has a positive example: mAP is undefined")
    return float(np.mean(defined)), per_class


def _average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """``sum_k (R_k - R_{k-1}) P_k`` over the distinct scores, highest first: the precision and
    recall of predicting positive every example scored at or above each, so tied examples count
    together (scikit-learn's ``average_precision_score``, which ``tests/test_small_models_train.py``
    compares with; importing it took 2.4 s of every training job)."""
    order = np.argsort(scores, kind="stable")[::-1]
    ranked, hits = scores[order], positives[order].astype(np.float64)
    # the last example of each run of equal scores
    ends = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]
    true_positives = np.cumsum(hits)[ends]
    precision = true_positives / (ends + 1)
    recall = true_positives / true_positives[-1]
    # summed lowest score first, as scikit-learn sums, so the value is its value to the bit
    steps = np.diff(np.r_[recall[::-1], 0.0])
    return float(-np.sum(steps * precision[::-1]))


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    model_name: str,
    num_classes: int,
    config: TrainConfig,
    data_hash: str,
    metrics: dict[str, float] | None = None,
) -> str:
    """Write ``model``'s weights with their provenance, and ``<path>.sha256`` beside them.

    The file is written to a temporary name and renamed, so an interrupted run leaves no
    half-written checkpoint. It holds no time stamp and no trace of the temporary name (the
    archive is serialised in memory under a fixed name), so the same training gives the same
    bytes in any process; keep ``metrics`` deterministic too (no wall-clock times).

    Args:
        path: Destination file (conventionally ``.pt``).
        model: The trained model.
        model_name: Its name in :data:`backsal.models.small.SMALL_MODELS`.
        num_classes: Its number of outputs.
        config: The training config (its seed included).
        data_hash: Hash of the training data (e.g. ``ClutteredDigits.content_hash``).
        metrics: Optional results to record (e.g. ``{"test_map": 0.97}``).

    Returns:
        The hex sha256 of the written file.
    """
    import torchvision  # its version only; importing it costs 1.5 s, so only here

    if model_name not in SMALL_MODELS:
        raise KeyError(f"unknown small model {model_name!r}; known: {sorted(SMALL_MODELS)}")
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": model_name,
        "num_classes": int(num_classes),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "provenance": {
            "config": dataclasses.asdict(config),
            "seed": config.seed,
            "data_hash": data_hash,
            "metrics": dict(metrics or {}),
            # plain str: torch's version object is not loadable with weights_only=True
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "backsal": backsal.__version__,
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # torch.save records a file's name as the zip's top folder; a buffer gets a fixed one
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(buffer.getvalue())
    os.replace(temporary, path)
    digest = file_digest(path)
    _sidecar(path).write_text(f"{digest}  {path.name}\n")
    return digest


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    model_name: str | None = None,
    expected_sha256: str | None = None,
    expected_data_hash: str | None = None,
    map_location: torch.device | str = "cpu",
) -> LoadedCheckpoint:
    """Restore a model saved by :func:`save_checkpoint`, checking everything it can.

    Args:
        path: The checkpoint file.
        model_name: If given, the checkpoint must be of this model.
        expected_sha256: If given, the file's sha256 must equal it (otherwise the ``.sha256`` file
            beside the checkpoint, if present, is checked).
        expected_data_hash: If given, the checkpoint must have been trained on data with this hash.
        map_location: Device of the restored model.

    Returns:
        The model in eval mode with its provenance and the file's sha256.

    Raises:
        FileNotFoundError: No file at ``path``.
        CheckpointError: Corrupt, modified, foreign or mismatching checkpoint (the message lists
            what differs and what to do).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}: train the model first (backsal.models.train.train_model, "
            "then save_checkpoint) or fix the path"
        )
    retrain = f"delete {path} (and {_sidecar(path).name}) and train the model again"
    digest = file_digest(path)
    recorded = expected_sha256
    origin = "the expected sha256"
    if recorded is None and _sidecar(path).is_file():
        recorded = (_sidecar(path).read_text().split() or [""])[0]
        origin = str(_sidecar(path))
    if recorded is not None and digest != recorded.lower():
        raise CheckpointError(
            f"checkpoint {path} has sha256 {digest}, but {origin} says {recorded}: the file is "
            f"corrupt or was modified; {retrain}"
        )

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(error).__name__}: {error}); it is corrupt "
            f"or not a backsal checkpoint; {retrain}"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a backsal small-model checkpoint (no format {CHECKPOINT_FORMAT!r}); "
            "pass a file written by backsal.models.train.save_checkpoint"
        )
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {payload.get('version')}, this backsal reads "
            f"version {CHECKPOINT_VERSION}; {retrain}"
        )

    missing = [key for key in _PAYLOAD_KEYS if key not in payload]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks {missing} (it has {sorted(payload)}): it was not written "
            f"by backsal.models.train.save_checkpoint or was edited; {retrain}"
        )
    if not isinstance(payload["provenance"], dict) or not isinstance(payload["state_dict"], dict):
        raise CheckpointError(
            f"checkpoint {path}: 'provenance' and 'state_dict' must be dicts; {retrain}"
        )
    if not isinstance(payload["num_classes"], int) or payload["num_classes"] < 1:
        raise CheckpointError(
            f"checkpoint {path}: 'num_classes' is {payload['num_classes']!r}, not a positive "
            f"integer; {retrain}"
        )
    name = payload["model"]
    if model_name is not None and name != model_name:
        raise CheckpointError(
            f"checkpoint {path} holds model {name!r}, not {model_name!r}: point the workflow "
            f"at the {model_name} checkpoint"
        )
    if name not in SMALL_MODELS:
        raise CheckpointError(
            f"checkpoint {path} holds unknown model {name!r}; known: {sorted(SMALL_MODELS)}"
        )
    provenance = payload["provenance"]
    if expected_data_hash is not None and provenance.get("data_hash") != expected_data_hash:
        raise CheckpointError(
            f"checkpoint {path} was trained on data {provenance.get('data_hash')}, but the data "
            f"now hash to {expected_data_hash} (the data or their generator changed); {retrain}"
        )

    num_classes = int(payload["num_classes"])
    model = SMALL_MODELS[name].builder(num_classes)
    check_state_dict(model, payload["state_dict"], source=str(path))
    model.load_state_dict(payload["state_dict"])
    model.to(map_location).eval()
    return LoadedCheckpoint(model, name, num_classes, provenance, digest)


def check_state_dict(
    model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "the state dict"
) -> None:
    """Raise :class:`CheckpointError` listing every missing, unexpected or mis-shaped entry."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in set(expected) & set(state_dict)
        if tuple(state_dict[key].shape) != tuple(expected[key].shape)
    )
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {', '.join(unexpected)}")
        if shapes:
            problems.append(f"shape mismatches: {'; '.join(shapes)}")
        raise CheckpointError(
            f"{source} does not fit {type(model).__name__}: "
            + " | ".join(problems)
            + ". The architecture or its number of classes changed since it was saved: retrain "
            "the model, or build the architecture the checkpoint was trained for."
        )


# --------------------------------------------------------------------------- helpers


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def _schedule(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    if config.schedule == "constant":
        return lambda step: 1.0
    return lambda step: 0.5 * (1.0 + float(np.cos(np.pi * min(step, total_steps) / total_steps)))


# Deterministic mode also fills every new tensor with NaN by default, to expose kernels that read
# memory they did not write. Training reads none (the same weights either way,
# tests/test_small_models_train.py), and the fill was 8% of a small model's CPU training step in
# the profiler (aten::fill_ under aten::empty) but within the noise of its time until the job's
# malloc kept its pages (backsal.allocator): then up to 3% (small ResNet 105 -> 102 ms a step).
_FILL_UNINITIALIZED = False


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Request deterministic kernels while training, restoring the caller's settings after."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_benchmark = torch.backends.cudnn.benchmark
    settings: Any = torch.utils.deterministic  # its flag is a module property mypy cannot see
    previous_fill = settings.fill_uninitialized_memory
    # On CUDA, cuBLAS is deterministic only with CUBLAS_WORKSPACE_CONFIG set before it starts;
    # warn instead of failing when the caller did not set it.
    warn_only = device.type == "cuda" and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    torch.backends.cudnn.benchmark = False
    settings.fill_uninitialized_memory = _FILL_UNINITIALIZED
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
        torch.backends.cudnn.benchmark = previous_benchmark
        settings.fill_uninitialized_memory = previous_fill


# --------------------------------------------------------------------------- registry


def _registry_builder(name: str) -> Callable[..., nn.Module]:
    def build(
        *, checkpoint: str | None = None, num_classes: int = 10, seed: int = 0, **_: object
    ) -> nn.Module:
        """The trained model from ``checkpoint`` (checked), or a seeded fresh one without it.

        The registry's download keywords (``pretrained``, ``root``, ...) do not apply: the
        workflow trains these models itself.
        """
        if checkpoint is not None:
            return load_checkpoint(checkpoint, model_name=name).model
        return build_small_model(name, num_classes, seed)

    return build


def _model_specs() -> tuple[object, ...]:
    from backsal.models import ModelSpec, PreprocessFunction

    return tuple(
        ModelSpec(
            name=spec.name,
            builder=_registry_builder(spec.name),
            preprocess=PreprocessFunction(small_transform, "uint8 RGB scaled to [0, 1]"),
            seed="logit",
            num_classes=10,
            dataset="cluttered_digits",
            probe_layers=spec.probe_layers,
            combination_layers=spec.combination_layers,
            contrast_layer="avgpool",
            description=f"{spec.name}: the offline benchmark's {spec.name.split('_')[1].upper()} "
            "(trained by the workflow)",
        )
        for spec in SMALL_MODELS.values()
    )


#: Registry entries (:mod:`backsal.models`): ``small_vgg``, ``small_resnet``. They live here, not
#: in :mod:`backsal.models.small`, because their builder loads this module's checkpoints: small.py
#: stays the architectures alone and never imports training code.
MODEL_SPECS = _model_specs()
