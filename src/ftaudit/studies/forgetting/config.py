"""The forgetting study's config: its own section, the query/attack section, and the shared ones.

Every key here is read by the study. The network is the study's own (``forgetting.arch`` with its
widths ``forgetting.hidden`` / ``forgetting.channels``), so there is no ``model`` section; the
``attack`` section gives the headline table's attacks, their parameters (also those of the curves'
attack ``forgetting.attack``), the targets and the query shifts.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ftaudit.config import (DIGITS, MAX_BATCH, MAX_EPOCHS, MAX_LAYERS, MAX_LR, MAX_REFERENCES, AttackConfig, ConfigSection,
                            EngineConfig, ModelConfig, StudyConfig, Width, field_error, increasing_counts)

MAX_STEPS = 10**6  # training steps of one forgetting run
from ftaudit.train.inject import pass_width


class ForgettingConfig(ConfigSection):
    """Study ``forgetting`` (Jagielski et al. 2022): how exposure fades once training moves on.

    Fields that a cross-field check reads come before the field it checks (pydantic validates in
    declaration order), so each error names the key to change.
    """

    schedules: list[Literal["inject", "poison"]] = Field(
        default=["inject", "poison"], min_length=1, max_length=2,
        description="inject: the injected set enters mid-training r times, then training goes on; poison: the set "
                    "is trained on first, as its own phase, then training continues on the other data")
    determinism: Literal["both", "deterministic", "nondeterministic"] = Field(
        default="both", description="deterministic: all models share one seed (init, data order, augmentation) and "
                                    "deterministic kernels, so IN and OUT models differ only by the injected examples")
    arch: Literal["mlp", "cnn"] = Field(default="mlp", description="network trained from random init (widths: hidden / channels)")
    hidden: list[Width] = Field(default=[128, 64], min_length=1, max_length=MAX_LAYERS, description="arch=mlp: hidden widths")
    channels: list[Width] = Field(default=[32, 64], min_length=1, max_length=MAX_LAYERS, description="arch=cnn: conv channels")
    models: int = Field(default=16, ge=4, le=MAX_REFERENCES, description="models per run (even): each takes a turn as "
                                                                         "target, the others are its references")
    train_size: int = Field(default=1000, ge=1, le=DIGITS, description="digits every model trains on throughout (never "
                                                                       "injected)")
    population_size: int = Field(default=200, ge=2, le=DIGITS, description="held-out digits: test accuracy and RMIA "
                                                                           "population")
    per_repetition: int = Field(default=50, ge=2, le=DIGITS, description="injected digits per repetition count (each IN "
                                                                         "for half the models)")
    mislabel: bool = Field(default=True, description="injected digits carry a random wrong label: outliers the models must "
                                                     "memorize (false: their true labels)")
    repetitions: list[Annotated[int, Field(le=1000)]] = Field(default=[1, 2, 4, 8], min_length=1, max_length=32,
                                                              description="inject: times an injected example is seen")
    inject_per_step: int = Field(default=16, ge=1, le=MAX_BATCH, description="inject: injected examples placed in each "
                                                                             "step of a pass")
    repeat_gap: int = Field(default=40, ge=1, le=MAX_STEPS, description="inject: steps between the starts of consecutive "
                                                                        "passes")
    inject_step: int = Field(default=400, ge=0, le=MAX_STEPS, description="inject: step (0-based) ending the last "
                                                                          "injection pass")
    poison_epochs: int = Field(default=30, ge=1, le=MAX_EPOCHS, description="poison: passes over the sensitive set before "
                                                                            "the other data")
    checkpoints: list[Annotated[int, Field(le=MAX_STEPS)]] = Field(
        default=[0, 10, 25, 50, 100, 200, 400, 800, 1600], min_length=2, max_length=64,
        description="steps since the injected set was last seen at which signals are measured; training ends at the last")
    optimizer: Literal["sgd", "adam"] = Field(default="adam", description="adam or sgd (torch.optim)")
    lr: float = Field(default=1e-2, gt=0, le=MAX_LR, description="learning rate (high enough that a few passes leave a "
                                                                 "trace)")
    batch_size: int = Field(default=32, ge=1, le=MAX_BATCH, description="mini-batch of the training data (injected rows come on top)")
    augment: int = Field(default=1, ge=0, le=2, description="train on random pixel shifts of up to this many pixels (0 = none)")
    attack: str = Field(default="lira-online", description="the attack whose AUC / TPR the decay curves show "
                                                           "(parameters from attack.params)")

    @field_validator("repetitions")
    @classmethod
    def _repetitions(cls, values: list[int]) -> list[int]:
        increasing_counts("repetitions", values)
        return values

    @field_validator("repeat_gap")
    @classmethod
    def _passes_do_not_overlap(cls, gap: int, info: ValidationInfo) -> int:
        d = info.data
        if not {"schedules", "per_repetition", "repetitions", "inject_per_step"} <= d.keys() or "inject" not in d["schedules"]:
            return gap
        n_injected = d["per_repetition"] * len(d["repetitions"])
        width = pass_width(n_injected, d["inject_per_step"])
        if max(d["repetitions"]) > 1 and gap < width:
            raise ValueError(f"a pass of {n_injected} examples spans {width} steps but passes start every {gap}: "
                             f"set repeat_gap >= {width} or raise inject_per_step")
        return gap

    @field_validator("inject_step")
    @classmethod
    def _first_pass_after_start(cls, step: int, info: ValidationInfo) -> int:
        d = info.data
        if not {"schedules", "per_repetition", "repetitions", "inject_per_step", "repeat_gap"} <= d.keys() \
                or "inject" not in d["schedules"]:
            return step
        width = pass_width(d["per_repetition"] * len(d["repetitions"]), d["inject_per_step"])
        need = (max(d["repetitions"]) - 1) * d["repeat_gap"] + width - 1
        if step < need:
            raise ValueError(f"{max(d['repetitions'])} passes need {need + 1} steps before it ends: set inject_step >= "
                             f"{need}, or lower repeat_gap or the repetitions")
        return step

    @field_validator("attack")
    @classmethod
    def _attack_on_references(cls, name: str) -> str:
        from ftaudit.attacks.registry import ATTACKS

        spec = ATTACKS.get(name)
        if spec is None or not spec.needs <= {"references", "population"}:
            raise ValueError(f"{name!r} is not an attack on reference models' signals: use one of lira-online, "
                             "lira-offline (…-global), rmia-online, rmia-offline, loss")
        return name

    @model_validator(mode="after")
    def _valid(self) -> "ForgettingConfig":
        if self.models % 2:
            raise field_error(("models",), "must be even (a half keep-matrix)", self.models)
        if len(set(self.schedules)) != len(self.schedules):
            raise field_error(("schedules",), "must not repeat", self.schedules)
        if self.checkpoints != sorted(set(self.checkpoints)) or self.checkpoints[0] < 0 or self.checkpoints[-1] < 1:
            raise field_error(("checkpoints",), "must be increasing step counts >= 0 ending >= 1", self.checkpoints)
        if self.train_size < self.batch_size:
            raise field_error(("batch_size",), f"train_size ({self.train_size} digits) is less than one batch "
                              f"({self.batch_size}): raise train_size or lower batch_size", self.batch_size)
        return self

    @property
    def steps_after(self) -> int:
        """Training steps after the injected set was last seen."""
        return self.checkpoints[-1]

    @property
    def n_injected(self) -> int:
        return self.per_repetition * len(self.repetitions)

    @property
    def model(self) -> ModelConfig:
        """The network as the shared model code builds it."""
        return ModelConfig(arch=self.arch, hidden=self.hidden, channels=self.channels)


class ForgettingAttacks(AttackConfig):
    """The headline attacks: no ``reference`` (these models are trained from scratch, no base)."""

    names: list[str] = Field(default=["loss", "lira-online", "lira-online-global", "lira-offline", "lira-offline-global",
                                      "rmia-online", "rmia-offline"], min_length=1, max_length=64,
                             description="attacks to run")


class ForgettingStudyConfig(StudyConfig):
    """A forgetting run: ``{study, seed, seeds, out, engine, metrics, attack, forgetting}``."""

    study: Literal["forgetting"] = "forgetting"
    attack: ForgettingAttacks = ForgettingAttacks()
    forgetting: ForgettingConfig = ForgettingConfig()

    @field_validator("engine")
    @classmethod
    def _vectorized(cls, engine: EngineConfig) -> EngineConfig:
        if engine.vectorized is False:
            raise ValueError("the forgetting study measures its checkpoints inside the vectorized trainer: "
                             "leave engine.vectorized null (or true)")
        return engine
