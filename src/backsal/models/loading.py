"""A model to explain, from a name, a weights choice, a checkpoint or a user's factory.

What ``backsal explain`` (and a notebook) asks for, in one call, :func:`load_model`:

* a **registry** name (:func:`backsal.models.available_models`): the paper's models with their
  own preprocessing, seed and contrast layer, weights fetched as the workflow fetches them;
* any **torchvision classifier** (``torchvision.models.list_models(module=torchvision.models)``),
  its weights chosen as torchvision chooses them: ``"DEFAULT"``, an enum member name such as
  ``"IMAGENET1K_V2"``, or ``None`` for a random initialisation. The weights are obtained through
  torchvision's own API (``get_model_weights`` / ``get_model``), so they land in torch.hub's
  cache (``$TORCH_HOME/hub/checkpoints``) and are checked against the hash in their file name; a
  failed download says where to put the file by hand. Class names come from the weights'
  ``meta["categories"]``;
* ``module:function`` (or ``path/to/file.py:function``): a **factory** of the user's that returns
  an ``nn.Module``;
* a **checkpoint** (``checkpoint=``) on top of any of them: a state dict, plain, wrapped as
  ``{"state_dict": ...}`` or ``{"model": ...}``, or with DataParallel's ``module.`` prefix, read
  with ``torch.load(weights_only=True)`` and loaded strictly (the first mismatch is named).

Inputs of torchvision and factory models are resized to the weights' crop size (224 by default)
*without* the centre crop of ``weights.transforms()``: a saliency map should cover the whole
image, not its centre. Mean and std are the weights' (ImageNet's by default).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Any

import torch
from torch import nn

from backsal.models import Seed, available_models, get_spec
from backsal.models.checkpoint import load_checkpoint_file, load_state_strict
from backsal.models.preprocess import ImageNetPreprocess, Preprocess
from backsal.models.small import SMALL_MODELS

__all__ = [
    "RANDOM_INIT_SEED",
    "LoadedModel",
    "ModelLoadError",
    "WeightsDownloadError",
    "load_model",
    "load_state_dict_file",
    "model_from_factory",
    "torchvision_classifiers",
    "torchvision_model",
]


RANDOM_INIT_SEED = 0
"""Seed of the random initialisation of torchvision models built without weights."""


class ModelLoadError(ValueError):
    """The model, weights, checkpoint or factory asked for does not exist or does not fit."""


class WeightsDownloadError(OSError):
    """Pretrained weights could not be downloaded (offline, blocked, or a broken file)."""


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to explain, with what the engine and a figure need to know about it.

    Attributes:
        model: The network, in eval mode.
        preprocess: ``uint8`` RGB images -> model inputs.
        seed: Backward seed for its output (``"logit"`` or ``"pointing"``).
        name: What the user asked for (registry name, torchvision name or factory).
        class_names: One name per output class, where the weights or the dataset give them.
        contrast_layer: Contrast layer of contrastive excitation backprop, where known.
        source: How it was obtained, as plain data (for provenance records).
        checksums: ``"model:<what>" -> "sha256:..."`` of the weight files it was loaded from.
        multilabel: Trained for several labels per image (sigmoid per class, BCE), as the
            paper's VOC and COCO models and the small models are; else one label (softmax).
    """

    model: nn.Module
    preprocess: Preprocess
    seed: Seed
    name: str
    class_names: tuple[str, ...] | None = None
    contrast_layer: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)
    multilabel: bool = False

    def probabilities(self, output: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[B, K]`` from the model's output.

        Class-score maps ``[B, K, h, w]`` (pointing models) are read at their maximum first.
        """
        if output.dim() == 4:
            output = output.amax(dim=(2, 3))
        if output.dim() != 2:
            raise ModelLoadError(
                f"the model's output has shape {tuple(output.shape)}: expected class scores "
                "[B, K] (or class maps [B, K, h, w])"
            )
        return torch.sigmoid(output) if self.multilabel else torch.softmax(output, dim=1)


# The registry datasets with several labels per image; their models are trained with BCE.
_MULTILABEL_DATASETS = ("voc07", "coco14", "cluttered_digits")


def torchvision_classifiers() -> list[str]:
    """Names of torchvision's image classifiers (not detection or segmentation models)."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def _resolve_weights(arch: str, weights: str | None) -> Any:
    """The weights enum member ``weights`` names for ``arch``; ``None`` for random weights."""
    from torchvision.models import get_model_weights

    if weights is None or weights.lower() == "none":
        return None
    enum = get_model_weights(arch)
    members = list(enum.__members__)
    if weights in enum.__members__:
        return enum[weights]
    # "ResNet18_Weights.IMAGENET1K_V1", as torchvision prints them, is accepted too
    prefix = f"{enum.__name__}."
    if weights.startswith(prefix) and weights[len(prefix) :] in enum.__members__:
        return enum[weights[len(prefix) :]]
    raise ModelLoadError(
        f"{arch} has no weights {weights!r}; use one of {', '.join(members)} or 'none'"
    )


def _cached_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _imagenet_like(weights: Any) -> ImageNetPreprocess:
    """The weights' resize size, mean and std, without the centre crop (see the module doc)."""
    if weights is None:
        return ImageNetPreprocess()
    transforms = weights.transforms()
    crop = getattr(transforms, "crop_size", [224])
    size = (int(crop[0]), int(crop[-1]))
    mean = tuple(float(v) for v in getattr(transforms, "mean", ImageNetPreprocess.mean))
    std = tuple(float(v) for v in getattr(transforms, "std", ImageNetPreprocess.std))
    return ImageNetPreprocess(size=size, mean=mean, std=std)  # type: ignore[arg-type]


def torchvision_model(
    arch: str,
    weights: str | None = "DEFAULT",
    *,
    num_classes: int | None = None,
    progress: bool = True,
) -> LoadedModel:
    """A torchvision classifier with weights chosen the torchvision way.

    Args:
        arch: A name from :func:`torchvision_classifiers`, e.g. ``"resnet18"``.
        weights: ``"DEFAULT"``, a member name of the architecture's weights enum (e.g.
            ``"IMAGENET1K_V1"``), or ``None`` / ``"none"`` for a random initialisation.
        num_classes: Output classes of a randomly initialised model (e.g. to load a fine-tuned
            checkpoint); pretrained weights fix their own.
        progress: Show the download's progress bar.

    Raises:
        ModelLoadError: Unknown architecture or weights name, or ``num_classes`` with weights.
        WeightsDownloadError: The weights are not cached and could not be downloaded.
    """
    from torchvision.models import get_model

    known = torchvision_classifiers()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelLoadError(f"torchvision has no classifier {arch!r}{hint}")
    chosen = _resolve_weights(arch, weights)
    if chosen is not None and num_classes is not None:
        raise ModelLoadError(
            f"num_classes={num_classes} needs random weights: {chosen} has "
            f"{len(chosen.meta['categories'])} classes (load a fine-tuned model as a checkpoint)"
        )
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    try:
        with torch.random.fork_rng(devices=[]):
            # random weights are the same in every run (and the caller's RNG is untouched)
            torch.manual_seed(RANDOM_INIT_SEED)
            model = get_model(arch, weights=chosen, progress=progress, **kwargs)
    except (urllib.error.URLError, HTTPException, ConnectionError, TimeoutError) as error:
        reason = getattr(error, "reason", error)
        raise WeightsDownloadError(
            f"could not download {chosen} from {chosen.url} ({reason}); if this machine is "
            f"offline, copy that file to {_cached_file(chosen.url)} (or set TORCH_HOME to a "
            "folder holding hub/checkpoints/ with it), or ask for random weights ('none')"
        ) from error
    except RuntimeError as error:
        if chosen is None or "hash" not in str(error):
            raise
        raise WeightsDownloadError(
            f"the downloaded {chosen} file does not match its published hash ({error}); delete "
            f"{_cached_file(chosen.url)} and try again"
        ) from error
    checksums: dict[str, str] = {}
    source: dict[str, Any] = {"kind": "torchvision", "arch": arch, "weights": str(chosen)}
    if chosen is None:
        source["init_seed"] = RANDOM_INIT_SEED
    if chosen is not None:
        from backsal.provenance import file_checksum

        source["url"] = chosen.url
        cached = _cached_file(chosen.url)
        if cached.is_file():
            checksums[f"model:{cached.name}"] = file_checksum(cached)
    categories = chosen.meta.get("categories") if chosen is not None else None
    if categories is None and num_classes is None:
        # Random weights of an ImageNet architecture still index ImageNet's classes.
        default = _resolve_weights(arch, "DEFAULT")
        categories = default.meta.get("categories") if default is not None else None
    return LoadedModel(
        model=model.eval(),
        preprocess=_imagenet_like(chosen),
        seed="logit",
        name=arch,
        class_names=tuple(categories) if categories else None,
        source=source,
        checksums=checksums,
    )


def _registry_model(
    name: str,
    pretrained: bool,
    root: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    spec = get_spec(name)
    checksums: dict[str, str] = {}
    source: dict[str, Any] = {"kind": "registry", "spec": spec.describe()}
    if spec.name in SMALL_MODELS:
        # Trained by the workflow: a checkpoint is read by the workflow's own loader, which
        # checks its sidecar hash and that it holds this model.
        if checkpoint is None and not pretrained:
            model = spec.build()  # a seeded fresh model, as random weights are for the others
        elif checkpoint is None:
            raise ModelLoadError(
                f"{name} is trained by the workflow: run `make run`, then pass its checkpoint "
                f"(--checkpoint resources/models/{name}.pt)"
            )
        else:
            from backsal.models.train import CheckpointError as TrainedCheckpointError

            try:
                model = spec.build(checkpoint=os.fspath(checkpoint))
            except (TrainedCheckpointError, FileNotFoundError) as error:
                raise ModelLoadError(f"{name} checkpoint {checkpoint}: {error}") from error
            from backsal.provenance import file_checksum

            checksums[f"model:{Path(checkpoint).name}"] = file_checksum(checkpoint)
            source["checkpoint"] = os.fspath(checkpoint)
    else:
        model = spec.build(pretrained=pretrained, root=root, download=pretrained)
        source["pretrained"] = pretrained
    return LoadedModel(
        model=model,
        preprocess=spec.preprocess,
        seed=spec.seed,
        name=name,
        class_names=_dataset_classes(spec.dataset, spec.num_classes),
        contrast_layer=spec.contrast_layer,
        source=source,
        checksums=checksums,
        multilabel=spec.dataset in _MULTILABEL_DATASETS,
    )


def _dataset_classes(dataset: str, count: int) -> tuple[str, ...] | None:
    """Class names of a registry model's dataset where they are fixed (COCO's come from its
    annotation file, which a single image does not have)."""
    names: tuple[str, ...] | None = None
    if dataset == "imagenet":
        from torchvision.models import ResNet50_Weights

        names = tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    elif dataset.startswith("voc"):
        from backsal.data.voc import VOC_CLASSES

        names = VOC_CLASSES
    elif dataset == "cluttered_digits":
        names = tuple(str(digit) for digit in range(10))
    return names if names is not None and len(names) == count else None


def model_from_factory(target: str) -> nn.Module:
    """Call a user's model factory named ``module:function`` or ``path/to/file.py:function``.

    A module name is imported with the current folder on ``sys.path`` (as ``python -m`` does).

    Raises:
        ModelLoadError: Malformed name, missing module or function, or a result that is no
            ``nn.Module``.
    """
    module_name, sep, function_name = target.rpartition(":")
    if not sep or not module_name or not function_name.isidentifier():
        raise ModelLoadError(f"{target!r} is not 'module:function' or 'file.py:function'")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ModelLoadError(f"model factory file {path} does not exist")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None  # a .py path always has a loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            raise ModelLoadError(
                f"cannot import {module_name!r} for the model factory ({error}); run from the "
                "folder that holds it or pass file.py:function"
            ) from error
    factory: Callable[[], Any] | None = getattr(module, function_name, None)
    if not callable(factory):
        raise ModelLoadError(f"{module_name} has no function {function_name!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{target} returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def load_state_dict_file(model: nn.Module, path: str | os.PathLike[str]) -> str:
    """Load a state dict file into ``model`` strictly; returns the file's checksum.

    Raises:
        ModelLoadError: Missing file.
        CheckpointError: Unreadable file, or keys or shapes that do not fit (the first mismatch
            leads the message).
    """
    from backsal.provenance import file_checksum

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {path} does not exist")
    advice = "is it a PyTorch state dict saved with torch.save(model.state_dict(), path)?"
    state = load_checkpoint_file(path, advice=advice)
    load_state_strict(
        model,
        state,
        source=f"checkpoint {path}",
        advice="Is it a checkpoint of this architecture (and number of classes)?",
    )
    return file_checksum(path)


def load_model(
    name: str,
    *,
    weights: str | None = "DEFAULT",
    checkpoint: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    root: str | os.PathLike[str] = "resources",
    progress: bool = True,
) -> LoadedModel:
    """The model ``name`` (registry, torchvision or ``module:function``), optionally a checkpoint.

    Args:
        name: A registry name, a torchvision classifier name, or ``module:function``.
        weights: Pretrained weights: ``"DEFAULT"``, a torchvision enum member name, or
            ``None`` / ``"none"`` (random). Registry models accept ``"DEFAULT"`` or ``None``.
            Ignored for factories (they build their own).
        checkpoint: A state dict file loaded on top (use with ``weights=None``).
        num_classes: Output classes of a random torchvision model (for a fine-tuned checkpoint).
        root: Resources folder of the registry models' weights.
        progress: Show download progress bars.

    Raises:
        ModelLoadError: Unknown name or weights, or a checkpoint that does not fit.
        WeightsDownloadError: Weights that are not cached could not be downloaded.
    """
    random = weights is None or str(weights).lower() == "none"
    if checkpoint is not None and not random:
        raise ModelLoadError(
            "a checkpoint replaces the pretrained weights: pass weights='none' with it"
        )
    if ":" in name:
        loaded = LoadedModel(
            model=model_from_factory(name),
            preprocess=ImageNetPreprocess(),
            seed="logit",
            name=name,
            source={"kind": "factory", "factory": name},
        )
    elif name in available_models():
        if not random and weights != "DEFAULT":
            raise ModelLoadError(f"{name} has one set of weights: use 'DEFAULT' or 'none'")
        if name in SMALL_MODELS:
            return _registry_model(name, pretrained=not random, root=root, checkpoint=checkpoint)
        loaded = _registry_model(name, pretrained=not random, root=root)
    elif name in torchvision_classifiers():
        loaded = torchvision_model(name, weights, num_classes=num_classes, progress=progress)
    else:
        known = [*available_models(), *torchvision_classifiers()]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelLoadError(
            f"unknown model {name!r}{hint}: use a registry name ({', '.join(available_models())}),"
            " a torchvision classifier name, or module:function"
        )
    if checkpoint is None:
        return loaded
    checksum = load_state_dict_file(loaded.model, checkpoint)
    class_names = loaded.class_names
    outputs = _output_classes(loaded.model)
    if class_names is not None and outputs is not None and outputs != len(class_names):
        class_names = None
    return LoadedModel(
        model=loaded.model.eval(),
        preprocess=loaded.preprocess,
        seed=loaded.seed,
        name=loaded.name,
        class_names=class_names,
        contrast_layer=loaded.contrast_layer,
        source={**loaded.source, "checkpoint": os.fspath(checkpoint)},
        checksums={**loaded.checksums, f"model:{Path(checkpoint).name}": checksum},
        multilabel=loaded.multilabel,
    )


def _output_classes(model: nn.Module) -> int | None:
    """Number of outputs of the last Linear layer, if the model ends in one."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else None
