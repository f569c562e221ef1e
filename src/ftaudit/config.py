"""Run specifications: the YAML schema, as pydantic models.

Every study has its own config class (``Study.Config``), a :class:`StudyConfig` composed of the
shared sections below (optimisation, DP, attacks, metrics, engine) and the study's own. A run is
fully described by it: ``{study, seed, seeds, out, engine, metrics, <the study's sections>}``. A key
the study does not read is not in its schema, so setting it is an error — and no behaviour depends
on which keys were set, only on their values, so a saved ``config.yaml`` re-runs to the same result.

Defaults are the study's own; a preset, a YAML file (``--config``) and ``--set key=value`` overrides
are merged on top, then validated strictly (:mod:`ftaudit.config_build`). Every user mistake becomes a :class:`~ftaudit.errors.UserError`
naming the dotted field and the fix.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from ftaudit.defaults import DEFAULT_STORE

# Bounds on what a run may ask for: far beyond any sensible audit, well within what one 24 GiB,
# 2-core machine could hold (the combined cost is checked by ftaudit.budget before any training).
MAX_SEED = 2**63 - 1          # SQLite's INTEGER and numpy/torch seeds
MAX_COUNT = 10**7             # backstop for every integer field without a tighter bound
MAX_LIST = 1000               # backstop for every list / dict field without a tighter bound
MAX_LR = 10.0                 # learning rates (Adam or SGD beyond this only produce NaN)
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
MAX_WIDTH = 8192              # a layer's width / channels
MAX_LAYERS = 64
MAX_REFERENCES = 4096         # reference / shadow models per target
MAX_BOOTSTRAP = 100_000
DIGITS = 1797                 # images in scikit-learn's digits: no split of it can be larger
MAX_BLOCKS = 10**6            # text blocks
MAX_EPSILON = 1e6             # a finite DP epsilon (.inf means no DP where allowed)

Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
LearningRate = Annotated[float, Field(gt=0, le=MAX_LR)]


def field_error(loc: tuple[str | int, ...], message: str, value: object) -> ValidationError:
    """A validation error located at ``loc`` (relative to the model validating): raised from a
    cross-field validator, it names the field to fix rather than its section."""
    return ValidationError.from_exception_data("config", [InitErrorDetails(
        type=PydanticCustomError("value_error", "{message}", {"message": message}), loc=loc, input=value)])


def known_method(value: str) -> str:
    """A fine-tuning method's name, checked against the registry (validators of every section that names one)."""
    from ftaudit.finetune.methods import METHODS

    if value not in METHODS:
        raise ValueError(f"unknown fine-tuning method {value!r}; choose one of {', '.join(METHODS)}")
    return value


class ConfigSection(BaseModel):
    """A config section: unknown keys are errors, assignments are validated, infinities and NaN
    are refused (a field that means something by .inf says so), and no integer or list exceeds
    the backstops ``MAX_COUNT`` / ``MAX_LIST``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _backstop(self) -> "ConfigSection":
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            bounded = any(hasattr(m, "le") or hasattr(m, "lt") for m in field.metadata)  # its own bound wins
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_COUNT and not bounded:
                raise field_error((name,), f"{value} is beyond any run this machine could do (at most {MAX_COUNT})",
                                  value)
            if isinstance(value, (list, dict)) and len(value) > MAX_LIST:
                raise field_error((name,), f"{len(value)} entries (at most {MAX_LIST})", value)
        return self


class DataConfig(ConfigSection):
    """How the digits are split into a public pretraining pool and a private fine-tuning task."""

    dataset: Literal["digits"] = Field(default="digits", description="scikit-learn's bundled 8x8 digits (no download)")
    split: Literal["half", "classes"] = Field(
        default="half", description="half: pretrain on a public labelled part of all classes, fine-tune on the private rest "
                                    "(same head); classes: pretrain on pretrain_classes, fine-tune a new head on finetune_classes")
    pretrain_size: int = Field(default=300, ge=10, le=DIGITS, description="split=half: public pretraining images")
    pretrain_classes: list[int] = Field(default=[0, 1, 2, 3, 4], min_length=2, max_length=10, description="split=classes only")
    finetune_classes: list[int] = Field(default=[5, 6, 7, 8, 9], min_length=2, max_length=10, description="split=classes only")
    audit_size: int = Field(default=500, ge=4, le=DIGITS, description="private examples under the keep-matrix")
    population_size: int = Field(default=400, ge=2, le=DIGITS, description="held-out fine-tune-task examples: test set "
                                                                             "and RMIA population")

    @model_validator(mode="after")
    def _classes(self) -> "DataConfig":
        check_classes(self.pretrain_classes, self.finetune_classes, overlap=self.split == "classes")
        return self


def check_classes(pretrain: list[int], finetune: list[int], overlap: bool = True) -> None:
    """Digit classes of the two stages: distinct digits 0-9, and (``overlap``) no class in both."""
    for name, values in (("pretrain_classes", pretrain), ("finetune_classes", finetune)):
        if any(not 0 <= c <= 9 for c in values) or len(set(values)) != len(values):
            raise field_error((name,), "must be distinct digits 0-9", values)
    if overlap and set(pretrain) & set(finetune):
        raise field_error(("finetune_classes",), f"{sorted(set(pretrain) & set(finetune))} also in pretrain_classes: "
                          "the two stages must not share a class", finetune)


class ModelConfig(ConfigSection):
    arch: Literal["mlp", "cnn"] = Field(default="cnn", description="small CNN (3x3 convs) or MLP")
    hidden: list[Width] = Field(default=[128, 64], min_length=1, max_length=MAX_LAYERS, description="mlp: hidden widths")
    channels: list[Width] = Field(default=[32, 64], min_length=1, max_length=MAX_LAYERS, description="cnn: conv channels")


class TrainingRecipe(ConfigSection):
    """How a model is trained, apart from its learning rate and length."""

    optimizer: Literal["sgd", "adam"] = Field(default="adam", description="adam or sgd (torch.optim)")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="sgd momentum")
    weight_decay: float = Field(default=0.0, ge=0, le=10, description="L2 weight decay")
    batch_size: int = Field(default=32, ge=1, le=MAX_BATCH, description="largest mini-batch")
    augment: int = Field(default=0, ge=0, le=2, description="train on random pixel shifts of up to this many pixels (0 = none)")


class OptimConfig(TrainingRecipe):
    """A whole training recipe: the engine's ``TrainGroup.optim`` (its fields are in every model's key)."""

    lr: float = Field(default=1e-3, gt=0, le=MAX_LR, description="learning rate")
    epochs: int = Field(default=40, ge=1, le=MAX_EPOCHS, description="passes over each model's training rows")


class PretrainConfig(OptimConfig):
    epochs: int = Field(default=30, ge=1, le=MAX_EPOCHS, description="passes over the public pretraining pool")
    augment: int = Field(default=1, ge=0, le=2, description="train on random pixel shifts of up to this many pixels (0 = none)")


class DPConfig(ConfigSection):
    """Differentially private fine-tuning (DP-SGD as Opacus does it: Poisson sampling, per-sample
    clipping, Gaussian noise); off unless ``epsilon`` is set."""

    epsilon: float | None = Field(default=None, gt=0, allow_inf_nan=True,
                                  description="target ε; null = no DP (.inf also means no DP)")
    delta: float | None = Field(default=None, gt=0, lt=1, description="target δ; null = 1e-5, or less than 1/N for small N")
    clip: float = Field(default=1.0, gt=0, le=1e6, description="per-sample gradient clipping norm C")
    accountant: Literal["rdp", "prv"] = Field(default="rdp", description="Opacus accountant that calibrates the noise (rdp or prv)")
    sample_rate: float | None = Field(default=None, gt=0, le=1, description="Poisson sampling rate q; null = batch_size / rows")

    @field_validator("epsilon")
    @classmethod
    def _epsilon(cls, value: float | None) -> float | None:
        if value is not None and value != float("inf") and not value <= MAX_EPSILON:
            raise ValueError(f"must be at most {MAX_EPSILON:g}, or .inf for no DP")
        return value

    @property
    def enabled(self) -> bool:
        return self.epsilon is not None and self.epsilon != float("inf")


class MethodOptionsConfig(ConfigSection):
    """The fine-tuning methods' knobs (``finetune.methods.MethodOptions``): each method reads its own."""

    layers: list[str] = Field(default=[], max_length=256, description="method=layers: blocks/parameters to train, "
                                                                      "e.g. [block2, head]")
    last_k: int = Field(default=1, ge=0, le=MAX_LAYERS, description="method=layers with no `layers`: the last k blocks "
                                                                    "plus the head")
    lora_rank: int = Field(default=4, ge=1, le=MAX_WIDTH, description="method=lora: rank r of each update")
    lora_alpha: float = Field(default=8.0, gt=0, le=1e4, description="method=lora: scaling alpha (update × alpha / r)")
    lora_targets: list[str] = Field(default=[], max_length=256, description="method=lora: module names; [] = every "
                                                                            "Linear/Conv of the body")
    adapter_size: int = Field(default=16, ge=1, le=MAX_WIDTH, description="method=adapters: bottleneck width")
    adapter_targets: list[str] = Field(default=[], max_length=256, description="method=adapters: module names; [] = "
                                                                               "each block's last projection")
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
    references: int = Field(default=16, ge=2, le=MAX_REFERENCES, description="reference models per target (LiRA/RMIA)")
    epochs: int = Field(default=60, ge=1, le=MAX_EPOCHS, description="passes over each model's keep-row")
    lr: float = Field(default=1e-3, gt=0, le=MAX_LR, description="learning rate")
    augment: int = Field(default=1, ge=0, le=2, description="train on random pixel shifts of up to this many pixels (0 = none)")

    @property
    def n_models(self) -> int:
        """Models trained: every target needs `references` others; the keep-matrix needs an even count."""
        return ensemble_size(self.references)


def ensemble_size(references: int) -> int:
    """Models trained so every target has ``references`` others (even, for a half keep-matrix)."""
    m = references + 1
    return m + (m % 2)


class AttackConfig(ConfigSection):
    names: list[str] = Field(
        default=["loss", "reference", "lira-online", "lira-online-global", "lira-offline",
                 "lira-offline-global", "rmia-online", "rmia-offline"], min_length=1, max_length=64,
        description="attacks to run")
    params: dict[str, dict[str, float]] = Field(default_factory=dict, max_length=64,
                                                description="per-attack parameters, e.g. rmia-online: {gamma: 2}")
    targets: int = Field(default=0, ge=0, le=MAX_REFERENCES + 2, description="models that take a turn as target; 0 = all")
    shifts: int = Field(default=1, ge=0, le=2, description="pixel shifts queried: 0 = original only, k = +-1..k in x and y")

    @model_validator(mode="after")
    def _known(self) -> "AttackConfig":
        check_attacks(self.names, self.params)
        return self


def check_attacks(names: list[str], params: dict[str, dict[str, float]]) -> None:
    """Attack names and parameters against the registry, as ``attack.names[i]`` / ``attack.params.…``
    (a UserError, which pydantic passes through with its exact field)."""
    from ftaudit.attacks.registry import resolve_request

    resolve_request(names, params)


class MetricsConfig(ConfigSection):
    fprs: list[float] = Field(default=[0.001, 0.01, 0.1], min_length=1, max_length=32,
                              description="FPRs at which TPR is reported")
    bootstrap: int = Field(default=1000, ge=10, le=MAX_BOOTSTRAP, description="bootstrap replicates (resampling audit "
                                                                              "examples)")
    ci_level: float = Field(default=0.95, gt=0.5, lt=1, description="confidence level of every interval")
    exposed: int = Field(default=12, ge=0, le=1000, description="most exposed examples shown in the report")

    @field_validator("fprs")
    @classmethod
    def _fprs(cls, values: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in values):
            raise ValueError("every FPR must lie strictly between 0 and 1")
        return values


class EngineConfig(ConfigSection):
    vectorized: bool | None = Field(default=None, description="train compatible models together with torch.func (true) "
                                                              "or one by one (false); null = the study's choice "
                                                              "(vectorized for vision, per-model for tiny LMs, which "
                                                              "ran faster that way on CPU). The trainer is part of "
                                                              "each model's cache key")
    chunk: int = Field(default=32, ge=1, le=MAX_REFERENCES, description="models trained per vectorized group (progress "
                                                                         "is saved per group)")
    threads: int = Field(default=0, ge=0, le=256, description="torch threads; 0 = auto: the cores free as each stage "
                                                              "starts (docs/performance.md, contention). With "
                                                              "executor=ray: the CPUs and torch threads of each task (0 = 1)")
    packed_lora: bool = Field(default=False, description="train LoRA groups (without DP) with the packed trainer: one "
                                                         "forward of the shared frozen base for all models' rows "
                                                         "(1.1-1.9x a per-model loop on 2 CPU cores, docs/performance.md)")
    pack_rows: int = Field(default=64, ge=0, le=MAX_COUNT, description="packed LoRA: rows per forward, whole models at a time "
                                                         "(0 = all models in one forward)")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda|cuda:\d{1,2}|mps)$",
                        description="where models train and are queried: auto (cuda if available, else cpu), cpu, "
                                    "cuda, cuda:N or mps. Part of a model's cache key when not cpu")
    dtype: Literal["float32", "bfloat16"] = Field(
        default="float32", description="training compute dtype: float32, or bfloat16 autocast (weights stay float32; "
                                       "where the device has it). Part of a model's cache key when not float32")
    executor: Literal["local", "ray"] = Field(
        default="local", description="who trains the missing models: local (this process) or ray (one task per "
                                     "chunk on a Ray cluster; pip install 'ftaudit[ray]', docs/scale.md)")
    ray_address: str | None = Field(default=None, max_length=4096,
                                    description="executor=ray: null = start a local Ray (or join RAY_ADDRESS when "
                                                "set); auto = join the cluster this machine is in; or host:port / "
                                                "ray://host:port")


def increasing_counts(name: str, values: list[int]) -> None:
    """Refuse a list of counts that is not positive and strictly increasing."""
    if values[0] < 1 or any(a >= b for a, b in zip(values, values[1:])):
        raise ValueError(f"{name} must be positive counts in increasing order")


DEFAULT_STUDY = "finetune-mia"


class StudyConfig(ConfigSection):
    """What every study's config has. A study subclasses it, adds its own sections and pins
    ``study`` to its name (``study: Literal["name"] = "name"``)."""

    study: str = Field(default=DEFAULT_STUDY, description="the study to run (`ftaudit studies`)")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="run seed; every job's seed derives from it")
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(
        default=[], max_length=100, description="repeat the whole study (base, keep-matrix, training) with these extra "
                                                "seeds and report the spread of each headline metric across seeds "
                                                "beside its example-bootstrap CI; [] = seed only")
    out: str = Field(default=DEFAULT_STORE, min_length=1, max_length=4096,
                     description="store directory: database, model cache, runs")
    preset: str | None = Field(default=None, max_length=200,
                               description="the named preset (`ftaudit presets`) merged under the config file and "
                                           "--set; null = the study's defaults alone")
    engine: EngineConfig = EngineConfig()
    metrics: MetricsConfig = MetricsConfig()

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, values: list[int]) -> list[int]:
        if len(set(values)) != len(values):
            raise ValueError("must be distinct")
        return values

    @field_validator("out")
    @classmethod
    def _store_path(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the store directory is blank")
        if "\0" in value:
            raise ValueError("the store directory contains a NUL byte")
        return value

    @property
    def all_seeds(self) -> list[int]:
        """The run's seed first, then the extra seeds (each study repetition's seed)."""
        return [self.seed] + [s for s in self.seeds if s != self.seed]
