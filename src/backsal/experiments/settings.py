"""Stage settings: one frozen object per stage of the workflow, built and checked from its config
section, with the defaults of ``workflow/schemas/config.schema.yaml`` (their one home).

A rule passes one ``settings`` param, ``SETTINGS.<stage>.params(...)``: a plain dict, because
Snakemake's params rerun trigger sees plain values only. The script rebuilds the object with
``<Stage>Settings.from_params(snakemake.params.settings)`` and hands it to the experiment
function. :class:`WorkflowSettings` holds every stage of a config, says which are
:meth:`~WorkflowSettings.enabled`, and :meth:`~WorkflowSettings.check` checks, when the config
is read, what the schema cannot (names of datasets, models, methods and layers), so that a
mistake fails before any job runs.

Adding a stage (e.g. ``sanity:``):

1. its section in the schema, every key with a description and a default;
2. a frozen dataclass here decorated ``@_stage("sanity")``, one field per key (same names), no
   defaults of its own: fields that only plan jobs (``runs``) are marked ``field(metadata=PLAN)``
   and stay out of :meth:`StageSettings.params`, so that editing them reruns nothing;
3. a field of :class:`WorkflowSettings`, its case in :meth:`WorkflowSettings.enabled`, and its
   names in :meth:`WorkflowSettings.check`;
4. its rules in ``workflow/rules/<stage>.smk`` pass ``settings=SETTINGS.sanity.params()``;
5. ``python -m backsal.experiments.config_readme`` regenerates ``config/README.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from backsal.models.layers import LayerSetting, order_layers, select_layers
from backsal.names import INPUT, RULES, resolve_method

__all__ = [
    "ALL_RULES",
    "PLAN",
    "SCHEMA",
    "STAGES",
    "CombinationSettings",
    "ConfigError",
    "DeletionSettings",
    "FiguresSettings",
    "MetaSettings",
    "PointingSettings",
    "SanitySettings",
    "SensitivitySettings",
    "StageSettings",
    "TrainSettings",
    "WorkflowSettings",
    "canonical",
    "methods_of_group",
    "names_pattern",
    "rule_groups",
    "rules_of",
    "schema_defaults",
]

#: The workflow's config schema: the one home of every key's default and description.
SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"
#: Field metadata of a setting that plans jobs but is read by none (left out of params()).
PLAN: Mapping[str, bool] = {"plan": True}


class ConfigError(ValueError):
    """A config mistake the schema cannot see; the message names the key."""


@functools.cache
def _schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))


def schema_defaults(*path: str) -> dict[str, Any]:
    """The schema's defaults of the keys of the config object at ``path``.

    ``path`` names nested objects; ``"*"`` stands for any name of a mapping, e.g.
    ``schema_defaults("meta")`` or ``schema_defaults("models", "*", "train")``.
    """
    node = _schema()
    for key in path:
        node = node["additionalProperties"] if key == "*" else node["properties"][key]
    properties = node.get("properties", {})
    return {key: value["default"] for key, value in properties.items() if "default" in value}


def _frozen(value: Any) -> Any:
    """Lists as tuples (mappings stay mappings, with their values frozen)."""
    if isinstance(value, Mapping):
        return {str(k): _frozen(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    """Tuples as lists, mappings sorted: the plain values a Snakemake param is compared by."""
    if isinstance(value, Mapping):  # sorted: Snakemake compares params by repr
        return {k: _plain(value[k]) for k in sorted(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


_S = TypeVar("_S", bound="StageSettings")


@dataclass(frozen=True)
class StageSettings:
    """The settings of one stage: one field per key of its config section."""

    SECTION: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_config(cls: type[_S], section: Mapping[str, Any] | None) -> _S:
        """The settings of a config section; ``None`` or absent keys take the schema's defaults.

        Raises:
            ConfigError: A key that is not a field, or a required key without a value.
        """
        where = ".".join(k for k in cls.SECTION if k != "*") or cls.__name__
        values = {**schema_defaults(*cls.SECTION), **(section or {})}
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; the keys are {sorted(names)}")
        optional = {f.name for f in fields(cls) if f.default is not dataclasses.MISSING}
        missing = sorted(names - set(values) - optional)
        if missing:
            raise ConfigError(f"{where}: missing keys {missing}")
        return cls(**{k: _frozen(v) for k, v in values.items()})

    @classmethod
    def from_params(cls: type[_S], params: Mapping[str, Any]) -> _S:
        """The settings a rule passed as its ``settings`` param (:meth:`params`)."""
        return cls.from_config(params)

    def params(self, **changes: Any) -> dict[str, Any]:
        """Plain values of the fields jobs read (``PLAN`` fields left out), for a rule's params.

        Args:
            changes: Field values of one job only (e.g. the methods of one backward rule).
        """
        settings = dataclasses.replace(self, **{k: _frozen(v) for k, v in changes.items()})
        return {
            f.name: _plain(getattr(settings, f.name))
            for f in fields(settings)
            if not f.metadata.get("plan")
        }


STAGES: dict[str, type[StageSettings]] = {}


def _stage(*section: str) -> Callable[[type[_S]], type[_S]]:
    def register(cls: type[_S]) -> type[_S]:
        cls.SECTION = section
        STAGES[section[-1]] = cls  # "pointing", ..., "train" (models.<name>.train)
        return cls

    return register


Runs = tuple[tuple[str, str], ...]
#: Runs are given as ``{dataset, model}`` mappings; they are kept as pairs.
_RUN_KEYS = ("dataset", "model")


def _pairs(runs: Iterable[Any]) -> Runs:
    return tuple(
        (str(run["dataset"]), str(run["model"])) if isinstance(run, Mapping) else tuple(run)
        for run in runs
    )  # type: ignore[return-value]


@_stage("pointing")
@dataclass(frozen=True)
class PointingSettings(StageSettings):
    """The pointing game per layer (docs/methods.md §6); keys: ``config/README.md``."""

    methods: tuple[str, ...]
    layers: LayerSetting
    input: bool
    smooth_input: bool
    shards: int
    batch_rows: int
    examples: int
    runs: Runs = field(default=(), metadata=PLAN)
    split_rules: bool = field(default=False, metadata=PLAN)

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", _pairs(self.runs))


@_stage("combination")
@dataclass(frozen=True)
class CombinationSettings(StageSettings):
    """Layer combination (docs/methods.md §3); measured on the pointing runs."""

    methods: tuple[str, ...]
    strategies: tuple[str, ...]
    modes: tuple[str, ...]
    weights_from: str
    shards: int
    batch_rows: int
    split_rules: bool = field(default=False, metadata=PLAN)


@_stage("meta")
@dataclass(frozen=True)
class MetaSettings(StageSettings):
    """Meta-saliency pointing over a learning-rate grid (docs/methods.md §4)."""

    methods: tuple[str, ...]
    layers: LayerSetting
    input: bool
    lrs: tuple[float, ...]
    steps: int
    strategy: str
    max_queries: int | None
    smooth_input: bool
    shards: int
    batch_rows: int
    negate: bool


@_stage("sensitivity")
@dataclass(frozen=True)
class SensitivitySettings(StageSettings):
    """Class sensitivity (docs/methods.md §7)."""

    methods: tuple[str, ...]
    layers: LayerSetting
    input: bool
    lrs: tuple[float, ...]
    strategy: str
    max_images: int | None
    shards: int
    batch_images: int
    runs: Runs = field(default=(), metadata=PLAN)

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", _pairs(self.runs))


@_stage("sanity")
@dataclass(frozen=True)
class SanitySettings(StageSettings):
    """The model-randomisation sanity check (docs/methods.md §12) on pointing datasets."""

    methods: tuple[str, ...]
    layers: LayerSetting
    input: bool
    blocks: str | tuple[str, ...] | Mapping[str, Any]
    max_blocks: int | None
    randomisations: tuple[str, ...]
    randomisation_seed: int
    max_queries: int
    batch_rows: int
    runs: Runs = field(default=(), metadata=PLAN)

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", _pairs(self.runs))


@_stage("deletion")
@dataclass(frozen=True)
class DeletionSettings(StageSettings):
    """Deletion and insertion (docs/methods.md §13) on pointing datasets."""

    methods: tuple[str, ...]
    layers: LayerSetting
    input: bool
    steps: int
    baselines: tuple[str, ...]
    max_queries: int
    batch_rows: int
    batch_size: int | None
    runs: Runs = field(default=(), metadata=PLAN)

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", _pairs(self.runs))


@_stage("figures")
@dataclass(frozen=True)
class FiguresSettings(StageSettings):
    """The final rules: tables and figures."""

    qualitative_methods: tuple[str, ...]
    grid_layers: LayerSetting
    reference: bool
    map_examples: int
    meta_examples: int


@_stage("models", "*", "train")
@dataclass(frozen=True)
class TrainSettings(StageSettings):
    """Training of one small model (``models.<name>.train``)."""

    dataset: str
    test_dataset: str
    epochs: int
    batch_size: int
    lr: float


def canonical(value: Any) -> Any:
    """``value`` with every mapping's keys sorted, as a rule param.

    Snakemake compares params by their ``repr``, so a config entry passed as a param must not
    depend on the order its keys were written in (a reformatted config would rerun its jobs).
    """
    if isinstance(value, Mapping):
        return {str(k): canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def rules_of(methods: Iterable[str]) -> list[str]:
    """The backward rules ``methods`` need, in the engine's order (:data:`backsal.names.RULES`)."""
    needed = {resolve_method(m).rule for m in methods}
    return [rule for rule in RULES if rule in needed]


#: The group of a job that runs every backward rule of its stage at once (``split_rules: false``).
ALL_RULES = "all_rules"


def rule_groups(methods: Iterable[str], split: bool) -> list[str]:
    """The backward-rule groups of a stage's jobs, each a job (per shard) and a records folder.

    One group per backward rule when ``split`` (a cluster runs them side by side), else one
    group for all, :data:`ALL_RULES`, when the methods need several rules: on one machine,
    a job per rule only repeats the start-up (imports, model, data) that one job pays once.
    The records are the same either way.
    """
    rules = rules_of(methods)
    return rules if split or len(rules) <= 1 else [ALL_RULES]


def methods_of_group(methods: Iterable[str], group: str) -> list[str]:
    """The methods a job of ``group`` (see :func:`rule_groups`) computes, in their order."""
    methods = list(methods)
    if group == ALL_RULES:
        return methods
    return [m for m in methods if resolve_method(m).rule == group]


def names_pattern(names: Iterable[str]) -> str:
    """A wildcard constraint matching exactly ``names`` (and nothing when there is none)."""
    escaped = [re.escape(name) for name in names]
    return "|".join(escaped) if escaped else "(?!)"


@dataclass(frozen=True)
class WorkflowSettings:
    """Every stage of one config, and what runs.

    Attributes:
        config: The validated config (schema defaults filled in).
        pointing, combination, meta, sensitivity, figures, sanity, deletion: The stages'
            settings (a section the config omits has the schema's defaults, which run nothing).
    """

    config: Mapping[str, Any]
    pointing: PointingSettings
    combination: CombinationSettings
    meta: MetaSettings
    sensitivity: SensitivitySettings
    figures: FiguresSettings
    sanity: SanitySettings
    deletion: DeletionSettings

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> WorkflowSettings:
        """The settings of a (validated) config; see :meth:`check`."""
        stages = {
            name: STAGES[name].from_config(config.get(name))
            for name in (
                "pointing",
                "combination",
                "meta",
                "sensitivity",
                "figures",
                "sanity",
                "deletion",
            )
        }
        return cls(config=config, **stages)  # type: ignore[arg-type]

    # ---------------------------------------------------------------------------- what runs

    def enabled(self, stage: str) -> bool:
        """Whether the config runs ``stage`` (a section that is absent or lists no method runs
        nothing); also ``reference`` (the comparison with the paper's numbers)."""
        if stage == "pointing":
            return True
        if stage in ("combination", "meta"):
            return bool(getattr(self, stage).methods)
        if stage in ("sensitivity", "sanity", "deletion"):
            settings = getattr(self, stage)
            return bool(settings.methods and settings.runs)
        if stage == "reference":
            return self.figures.reference
        raise KeyError(f"unknown stage {stage!r}")

    def models_of_kind(self, kind: str) -> list[str]:
        """Names of the config's models of ``kind`` (``small`` or ``registry``)."""
        return [name for name, entry in self.config["models"].items() if entry["kind"] == kind]

    def train(self, model: str) -> TrainSettings:
        """The training settings of a small model."""
        return TrainSettings.from_config(self.config["models"][model].get("train"))

    def weights_runs(self) -> Runs:
        """(dataset, model) pairs whose pointing game only weights the combination."""
        combination = self.combination
        if (
            not self.enabled("combination")
            or combination.weights_from == "test"
            or "pointing_accuracy" not in combination.strategies
        ):
            return ()
        return tuple((combination.weights_from, model) for _, model in self.pointing.runs)

    def pointing_methods(self, dataset: str, model: str) -> tuple[str, ...]:
        """The methods of a pointing run; a weights run needs the combination methods only."""
        if (dataset, model) in self.pointing.runs:
            return self.pointing.methods
        return self.combination.methods

    def meta_runs(self) -> Runs:
        """Runs with a meta-saliency figure: the pointing runs when meta runs, and sensitivity
        runs with a learning-rate grid."""
        runs = list(self.pointing.runs) if self.enabled("meta") else []
        if self.sensitivity_meta():
            runs += [run for run in self.sensitivity.runs if run not in runs]
        return tuple(runs)

    def sensitivity_meta(self) -> bool:
        """Whether class sensitivity is also measured after a meta step."""
        return self.enabled("sensitivity") and any(lr > 0 for lr in self.sensitivity.lrs)

    # ---------------------------------------------------------------------------- layers

    def spec(self, model: str) -> Any:
        """The model spec of a config model (its architecture's for a small one)."""
        from backsal.models import get_spec

        entry = self.config["models"][model]
        return get_spec(
            entry["arch"] if entry["kind"] == "small" else entry.get("registry") or model
        )

    def layers(self, stage: str, model: str) -> list[str]:
        """The layers ``stage`` evaluates on ``model`` (its ``layers`` and ``input`` keys)."""
        settings = getattr(self, stage)
        return select_layers(settings.layers, self.spec(model), model, input=settings.input)

    def layer_order(self) -> dict[str, list[str]]:
        """Per model, every layer any stage evaluates, shallow to deep with the input first."""
        order = {}
        for model in self.config["models"]:
            spec = self.spec(model)
            used = set(spec.combination_layers) if self.enabled("combination") else set()
            for stage in ("pointing", "meta", "sensitivity", "sanity", "deletion"):
                if stage == "pointing" or self.config.get(stage):
                    settings = getattr(self, stage)
                    used.update(select_layers(settings.layers, spec, model))
            order[model] = order_layers(spec.probe_layers, used)
        return order

    def pointing_layers(self, model: str) -> list[str]:
        """Every layer the pointing jobs evaluate on ``model``: the setting's, the input, and
        the combination layers when the combination runs (their accuracies weight it)."""
        spec = self.spec(model)
        also = spec.combination_layers if self.enabled("combination") else ()
        settings = self.pointing
        return select_layers(settings.layers, spec, model, input=settings.input, also=also)

    def grid_layers(self) -> dict[str, list[str]]:
        """Per pointing model, the layers of the phase-1 x phase-2 grid figure
        (``figures.grid_layers``), among those the pointing jobs evaluate."""
        result = {}
        for model in dict.fromkeys(model for _, model in self.pointing.runs):
            evaluated = self.pointing_layers(model)
            wanted = select_layers(self.figures.grid_layers, self.spec(model), model)
            result[model] = [layer for layer in wanted if layer in evaluated]
        return result

    def scatter_layers(self) -> dict[str, str]:
        """Per sensitivity model, the layer of the per-image scatter figure: the deepest one the
        sensitivity jobs evaluate (the input only where it is the only one)."""
        order = self.layer_order()
        result = {}
        for model in dict.fromkeys(model for _, model in self.sensitivity.runs):
            evaluated = set(self.layers("sensitivity", model))
            result[model] = [layer for layer in order[model] if layer in evaluated][-1]
        return result

    # ---------------------------------------------------------------------------- checks

    def check(self, *, layer_names: Callable[[str], Iterable[str]] | None = None) -> None:
        """Check what the schema cannot: that every name refers to something that exists.

        Args:
            layer_names: ``model -> its module names``; given, every layer of
                ``pointing.layers``, ``meta.layers`` and ``sensitivity.layers`` must be one
                (the workflow passes :func:`backsal.experiments.architecture_layers`).

        Raises:
            ConfigError: The first mistake, naming its key.
        """
        config = self.config
        for name, entry in config["models"].items():
            if entry["kind"] == "small":
                if "arch" not in entry or "train" not in entry:
                    raise ConfigError(f"models.{name}: a small model needs arch and train")
                for key in ("dataset", "test_dataset"):
                    train_set = entry["train"][key]
                    if self._dataset(train_set, f"models.{name}.train.{key}")["kind"] != (
                        "cluttered_digits"
                    ):
                        raise ConfigError(
                            f"models.{name}.train.{key}: {train_set!r} is not a cluttered_digits "
                            "dataset"
                        )
        for name, entry in config["datasets"].items():
            if entry["kind"] == "cluttered_digits" and "split" not in entry:
                raise ConfigError(
                    f"datasets.{name}: a cluttered_digits dataset needs split (train or test)"
                )
        for stage in ("pointing", "sensitivity", "sanity", "deletion"):
            for dataset, model in getattr(self, stage).runs:
                kind = self._dataset(dataset, f"{stage}.runs")["kind"]
                self._model(model, f"{stage}.runs")
                # sanity and deletion explain the queries (image, class present) of a dataset
                if stage != "sensitivity" and kind == "imagenet":
                    raise ConfigError(
                        f"{stage}.runs: ImageNet val ({dataset!r}) has no boxes for the pointing "
                        "game"
                        if stage == "pointing"
                        else f"{stage}.runs: {stage} explains the "
                        f"queries of a pointing dataset; ImageNet val ({dataset!r}) has none"
                    )
        for stage in ("pointing", "combination", "meta", "sensitivity", "sanity", "deletion"):
            self._methods(f"{stage}.methods", getattr(self, stage).methods)
        self._methods("figures.qualitative_methods", self.figures.qualitative_methods)
        shown = set(self.figures.qualitative_methods) - set(self.pointing.methods)
        if shown:
            raise ConfigError(
                f"figures.qualitative_methods: {sorted(shown)} are not computed; the qualitative "
                f"figures show methods of pointing.methods {list(self.pointing.methods)}"
            )
        grid_methods = [m for m in self.pointing.methods if "/" in m]
        try:
            grid = self.grid_layers()
        except ValueError as error:
            raise ConfigError(f"figures.grid_layers: {error}") from None
        for model, layers in grid.items():
            if grid_methods and not layers:
                raise ConfigError(
                    f"figures.grid_layers: none of its layers of model {model!r} is evaluated; "
                    f"pointing evaluates {self.pointing_layers(model)}"
                )
        if self.enabled("combination") and self.combination.weights_from != "test":
            self._dataset(self.combination.weights_from, "combination.weights_from")
        if layer_names is not None:
            self._check_layers(layer_names)

    def _check_layers(self, layer_names: Callable[[str], Iterable[str]]) -> None:
        runs = {stage: getattr(self, stage).runs for stage in ("pointing", "sensitivity")}
        runs.update(meta=self.pointing.runs, sanity=self.sanity.runs, deletion=self.deletion.runs)
        for stage in ("pointing", "meta", "sensitivity", "sanity", "deletion"):
            if stage != "pointing" and not self.enabled(stage):
                continue
            for model in dict.fromkeys(model for _, model in runs[stage]):
                known = set(layer_names(model))
                try:
                    layers = self.layers(stage, model)
                except ValueError as error:
                    raise ConfigError(f"{stage}.layers: {error}") from None
                unknown = [layer for layer in layers if layer != INPUT and layer not in known]
                if unknown:
                    raise ConfigError(
                        f"{stage}.layers: model {model!r} has no layers {unknown}; its layers "
                        f"are {_listing(known)} (`backsal layers {self.spec(model).name}`)"
                    )

    def _dataset(self, name: str, key: str) -> Mapping[str, Any]:
        if name not in self.config["datasets"]:
            raise ConfigError(
                f"{key}: unknown dataset {name!r}; datasets are {sorted(self.config['datasets'])}"
            )
        return self.config["datasets"][name]

    def _model(self, name: str, key: str) -> Mapping[str, Any]:
        if name not in self.config["models"]:
            raise ConfigError(
                f"{key}: unknown model {name!r}; models are {sorted(self.config['models'])}"
            )
        return self.config["models"][name]

    @staticmethod
    def _methods(key: str, methods: Sequence[str]) -> None:
        for method in methods:
            try:
                resolve_method(method)
            except ValueError as error:
                raise ConfigError(f"{key}: {error}") from None


def _listing(names: Iterable[str], limit: int = 40) -> str:
    ordered = sorted(n for n in names if n)
    shown = ", ".join(ordered[:limit])
    return shown + (f", … ({len(ordered)} in all)" if len(ordered) > limit else "")
