"""Run specifications: the YAML schema, as pydantic models.

Every study has its own config class (``Study.Config``), a :class:`StudyConfig` composed of the
shared sections below (optimisation, DP, attacks, metrics, engine) and the study's own. A run is
fully described by it: ``{study, seed, seeds, out, engine, metrics, <the study's sections>}``. A key
the study does not read is not in its schema, so setting it is an error — and no behaviour depends
on which keys were set, only on their values, so a saved ``config.yaml`` re-runs to the same result.

Defaults are the study's own; a YAML file (``--config``) and ``--set key=value`` overrides are merged
on top, then validated strictly. Every user mistake becomes a :class:`~ftaudit.errors.UserError`
naming the dotted field and the fix.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ftaudit.errors import UserError


def known_method(value: str) -> str:
    """A fine-tuning method's name, checked against the registry (validators of every section that names one)."""
    from ftaudit.finetune.methods import METHODS

    if value not in METHODS:
        raise ValueError(f"unknown fine-tuning method {value!r}; choose one of {', '.join(METHODS)}")
    return value


class ConfigSection(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(ConfigSection):
    """How the digits are split into a public pretraining pool and a private fine-tuning task."""

    dataset: Literal["digits"] = Field(default="digits", description="scikit-learn's bundled 8x8 digits (no download)")
    split: Literal["half", "classes"] = Field(
        default="half", description="half: pretrain on a public labelled part of all classes, fine-tune on the private rest "
                                    "(same head); classes: pretrain on pretrain_classes, fine-tune a new head on finetune_classes")
    pretrain_size: int = Field(default=300, ge=10, description="split=half: public pretraining images")
    pretrain_classes: list[int] = Field(default=[0, 1, 2, 3, 4], min_length=2, description="split=classes only")
    finetune_classes: list[int] = Field(default=[5, 6, 7, 8, 9], min_length=2, description="split=classes only")
    audit_size: int = Field(default=500, ge=4, description="private examples under the keep-matrix")
    population_size: int = Field(default=400, ge=2, description="held-out fine-tune-task examples: test set and RMIA population")

    @model_validator(mode="after")
    def _classes(self) -> "DataConfig":
        for name in ("pretrain_classes", "finetune_classes"):
            values = getattr(self, name)
            if any(not 0 <= c <= 9 for c in values) or len(set(values)) != len(values):
                raise ValueError(f"{name} must be distinct digits 0-9, got {values}")
        if self.split == "classes" and set(self.pretrain_classes) & set(self.finetune_classes):
            raise ValueError("pretrain_classes and finetune_classes must not overlap")
        return self


class ModelConfig(ConfigSection):
    arch: Literal["mlp", "cnn"] = Field(default="cnn", description="small CNN (3x3 convs) or MLP")
    hidden: list[int] = Field(default=[128, 64], min_length=1, description="mlp: hidden widths")
    channels: list[int] = Field(default=[32, 64], min_length=1, description="cnn: conv channels")

    @model_validator(mode="after")
    def _positive(self) -> "ModelConfig":
        for name in ("hidden", "channels"):
            if any(v < 1 for v in getattr(self, name)):
                raise ValueError(f"{name} must be positive widths")
        return self


class TrainingRecipe(ConfigSection):
    """How a model is trained, apart from its learning rate and length."""

    optimizer: Literal["sgd", "adam"] = Field(default="adam", description="adam or sgd (torch.optim)")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="sgd momentum")
    weight_decay: float = Field(default=0.0, ge=0, description="L2 weight decay")
    batch_size: int = Field(default=32, ge=1, description="largest mini-batch")
    augment: int = Field(default=0, ge=0, le=2, description="train on random pixel shifts of up to this many pixels (0 = none)")


class OptimConfig(TrainingRecipe):
    """A whole training recipe: the engine's ``TrainGroup.optim`` (its fields are in every model's key)."""

    lr: float = Field(default=1e-3, gt=0, description="learning rate")
    epochs: int = Field(default=40, ge=1, description="passes over each model's training rows")


class PretrainConfig(OptimConfig):
    epochs: int = Field(default=30, ge=1, description="passes over the public pretraining pool")
    augment: int = Field(default=1, ge=0, le=2, description="train on random pixel shifts of up to this many pixels (0 = none)")


class DPConfig(ConfigSection):
    """Differentially private fine-tuning (DP-SGD as Opacus does it: Poisson sampling, per-sample
    clipping, Gaussian noise); off unless ``epsilon`` is set."""

    epsilon: float | None = Field(default=None, gt=0, description="target ε; null = no DP (.inf also means no DP)")
    delta: float | None = Field(default=None, gt=0, lt=1, description="target δ; null = 1e-5, or less than 1/N for small N")
    clip: float = Field(default=1.0, gt=0, description="per-sample gradient clipping norm C")
    accountant: Literal["rdp", "prv"] = Field(default="rdp", description="Opacus accountant that calibrates the noise (rdp or prv)")
    sample_rate: float | None = Field(default=None, gt=0, le=1, description="Poisson sampling rate q; null = batch_size / rows")

    @property
    def enabled(self) -> bool:
        return self.epsilon is not None and self.epsilon != float("inf")


class MethodOptionsConfig(ConfigSection):
    """The fine-tuning methods' knobs (``finetune.methods.MethodOptions``): each method reads its own."""

    layers: list[str] = Field(default=[], description="method=layers: blocks/parameters to train, e.g. [block2, head]")
    last_k: int = Field(default=1, ge=0, description="method=layers with no `layers`: the last k blocks plus the head")
    lora_rank: int = Field(default=4, ge=1, description="method=lora: rank r of each update")
    lora_alpha: float = Field(default=8.0, gt=0, description="method=lora: scaling alpha (update × alpha / r)")
    lora_targets: list[str] = Field(default=[], description="method=lora: module names; [] = every Linear/Conv of the body")
    adapter_size: int = Field(default=16, ge=1, description="method=adapters: bottleneck width")
    adapter_targets: list[str] = Field(default=[], description="method=adapters: module names; [] = each block's last projection")
    train_head: bool = Field(default=True, description="bitfit/lora/adapters: train the task head too")


class MethodConfig(MethodOptionsConfig):
    """What fine-tuning trains (``ftaudit.finetune.methods``) and the method's knobs."""

    method: str = Field(default="full", description="what fine-tuning trains: full, head, layers, bitfit, lora, adapters")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return known_method(value)


class FinetuneConfig(OptimConfig, MethodConfig):
    """Fine-tuning of an ensemble: the method, the recipe, DP-SGD and the references per target."""

    dp: DPConfig = DPConfig()
    references: int = Field(default=16, ge=2, description="reference models per target (LiRA/RMIA)")
    epochs: int = Field(default=60, ge=1, description="passes over each model's keep-row")
    lr: float = Field(default=1e-3, gt=0, description="learning rate")
    augment: int = Field(default=1, ge=0, le=2, description="train on random pixel shifts of up to this many pixels (0 = none)")

    @property
    def n_models(self) -> int:
        """Models trained: every target needs `references` others; the keep-matrix needs an even count."""
        m = self.references + 1
        return m + (m % 2)


def ensemble_size(references: int) -> int:
    """Models trained so every target has ``references`` others (even, for a half keep-matrix)."""
    m = references + 1
    return m + (m % 2)


class AttackConfig(ConfigSection):
    names: list[str] = Field(
        default=["loss", "reference", "lira-online", "lira-online-global", "lira-offline",
                 "lira-offline-global", "rmia-online", "rmia-offline"], min_length=1, description="attacks to run")
    params: dict[str, dict[str, float]] = Field(default_factory=dict, description="per-attack parameters, e.g. rmia-online: {gamma: 2}")
    targets: int = Field(default=0, ge=0, description="models that take a turn as target; 0 = all")
    shifts: int = Field(default=1, ge=0, le=2, description="pixel shifts queried: 0 = original only, k = +-1..k in x and y")


class MetricsConfig(ConfigSection):
    fprs: list[float] = Field(default=[0.001, 0.01, 0.1], min_length=1, description="FPRs at which TPR is reported")
    bootstrap: int = Field(default=1000, ge=10, description="bootstrap replicates (resampling audit examples)")
    ci_level: float = Field(default=0.95, gt=0.5, lt=1, description="confidence level of every interval")
    exposed: int = Field(default=12, ge=0, description="most exposed examples shown in the report")

    @model_validator(mode="after")
    def _fprs(self) -> "MetricsConfig":
        if any(not 0 < f < 1 for f in self.fprs):
            raise ValueError("fprs must lie strictly between 0 and 1")
        return self


class EngineConfig(ConfigSection):
    vectorized: bool | None = Field(default=None, description="train compatible models together with torch.func (true) "
                                                              "or one by one (false); null = the study's choice "
                                                              "(vectorized for vision, per-model for tiny LMs, which "
                                                              "ran faster that way on CPU). The trainer is part of "
                                                              "each model's cache key")
    chunk: int = Field(default=32, ge=1, description="models trained per vectorized group (progress is saved per group)")
    threads: int = Field(default=0, ge=0, description="torch threads; 0 = torch's default")
    packed_lora: bool = Field(default=False, description="train LoRA groups (without DP) with the packed trainer: one "
                                                         "forward of the shared frozen base for all models' rows "
                                                         "(1.1-1.9x a per-model loop on 2 CPU cores, docs/performance.md)")
    pack_rows: int = Field(default=64, ge=0, description="packed LoRA: rows per forward, whole models at a time "
                                                         "(0 = all models in one forward)")


def increasing_counts(name: str, values: list[int]) -> None:
    """Refuse a list of counts that is not positive and strictly increasing."""
    if values[0] < 1 or any(a >= b for a, b in zip(values, values[1:])):
        raise ValueError(f"{name} must be positive counts in increasing order, got {values}")


DEFAULT_STUDY = "finetune-mia"


class StudyConfig(ConfigSection):
    """What every study's config has. A study subclasses it, adds its own sections and pins
    ``study`` to its name (``study: Literal["name"] = "name"``)."""

    study: str = Field(default=DEFAULT_STUDY, description="the study to run (`ftaudit studies`)")
    seed: int = Field(default=0, ge=0, description="run seed; every job's seed derives from it")
    seeds: list[int] = Field(default=[], description="repeat the whole study (base, keep-matrix, training) with these "
                                                     "extra seeds and report the spread of each headline metric across "
                                                     "seeds beside its example-bootstrap CI; [] = seed only")
    out: str = Field(default="ftaudit-runs", description="store directory: database, model cache, runs")
    engine: EngineConfig = EngineConfig()
    metrics: MetricsConfig = MetricsConfig()

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, values: list[int]) -> list[int]:
        if any(v < 0 for v in values) or len(set(values)) != len(values):
            raise ValueError(f"seeds must be distinct non-negative integers, got {values}")
        return values

    @property
    def all_seeds(self) -> list[int]:
        """The run's seed first, then the extra seeds (each study repetition's seed)."""
        return [self.seed] + [s for s in self.seeds if s != self.seed]


# ---------------------------------------------------------------------------------------------
# Loading and overrides


def _first_error(exc: ValidationError) -> UserError:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "config"
    kind = err["type"]
    if kind == "extra_forbidden":
        return UserError(field, "unknown key", "remove it or check its spelling (`ftaudit config` prints every key)")
    if kind == "literal_error":
        return UserError(field, f"got {err.get('input')!r}", err["msg"].lower())
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    got = f" (got {err.get('input')!r})" if err["loc"] else ""
    return UserError(field, msg + got, "set a valid value in the config file or with --set")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``finetune.epochs=10`` → (["finetune", "epochs"], 10). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise UserError("--set", f"{text!r} has no '='", "write --set key=value, e.g. --set finetune.epochs=10")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError("--set", f"{text!r} has an empty key", "write --set section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _set_path(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(".".join(path), f"{part!r} is a value, not a section", "set the section's keys instead")
        node = child
    node[path[-1]] = value


def read_config_file(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError("--config", f"file not found: {p}", "give the path of an existing YAML file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError("--config", f"{p} is not valid YAML{where}", "fix the YAML syntax") from None
    except UnicodeDecodeError:
        raise UserError("--config", f"{p} is not a text file", "give a UTF-8 YAML file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError("--config", f"{p} must hold a mapping of sections, not {type(data).__name__}", "see the config keys in the README")
    return data


def study_config_class(name: str) -> type[StudyConfig]:
    from ftaudit.studies import get_study

    return get_study(name).Config


def build_config(study: str | None = None, config_file: str | Path | None = None,
                 overrides: list[str] | None = None, **kwargs: Any) -> StudyConfig:
    """Merge the study's defaults < file < overrides < keyword arguments (``finetune__epochs=5`` or
    ``epochs=5`` shortcuts), then validate against the study's own config class. The study is the
    ``study`` argument, else the merged tree's ``study`` key, else the default study."""
    tree: dict = read_config_file(config_file) if config_file else {}
    for text in overrides or []:
        path, value = parse_override(text)
        _set_path(tree, path, value)
    if study is not None:
        tree["study"] = study
    name = tree.get("study", DEFAULT_STUDY)
    if not isinstance(name, str):
        raise UserError("study", f"must be a study name, got {name!r}", "see `ftaudit studies`")
    config_class = study_config_class(name)
    for key, value in kwargs.items():
        _set_path(tree, _kwarg_path(config_class, key), value)
    try:
        return config_class.model_validate(tree)
    except ValidationError as exc:
        raise _first_error(exc) from None


def _kwarg_path(config_class: type[StudyConfig], key: str) -> list[str]:
    """API shortcut: ``finetune__epochs`` → finetune.epochs; a bare key is looked up across the
    study's sections (the fine-tuning section wins when several have it)."""
    if "__" in key:
        return key.split("__")
    if key in config_class.model_fields:
        return [key]
    owners = [name for name, f in config_class.model_fields.items()
              if isinstance(f.default, BaseModel) and key in type(f.default).model_fields]
    if len(owners) == 1:
        return [owners[0], key]
    if "finetune" in owners:  # ftaudit.run(..., epochs=30) means the fine-tuning's epochs
        return ["finetune", key]
    if not owners:
        raise UserError(key, "unknown config key", "use section__key, e.g. finetune__epochs=10")
    raise UserError(key, f"ambiguous: it exists in {', '.join(owners)}", f"use e.g. {owners[-1]}__{key}")


def config_keys(study: str = DEFAULT_STUDY) -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every leaf of a study's config: the README and
    docs/configuration.md tables are generated from this."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], instance: BaseModel, prefix: str) -> None:
        for name, field in model.model_fields.items():
            value = getattr(instance, name)
            if isinstance(value, BaseModel):
                walk(type(value), value, f"{prefix}{name}.")
            else:
                rows.append((prefix + name, repr(value) if not isinstance(value, str) else value, field.description or ""))

    config_class = study_config_class(study)
    walk(config_class, config_class(), "")
    return rows
