"""The digits transfer studies' configs: ``finetune-mia``, ``methods`` and ``dp-finetune``.

All three pretrain a small network on a public part of the digits and fine-tune ensembles from
it on halves of a private audit pool; they share ``data``, ``model``, ``pretrain`` and ``attack``
and differ in what they fine-tune and sweep.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_serializer, field_validator, model_validator

from ftaudit.errors import UserError
from ftaudit.config import (MAX_EPOCHS, MAX_EPSILON, MAX_REFERENCES, AttackConfig, ConfigSection, DataConfig, DPConfig,
                            FinetuneConfig, LearningRate, MethodConfig, ModelConfig, PretrainConfig, StudyConfig,
                            TrainingRecipe, ensemble_size, field_error, known_method)
from ftaudit.config_input import closest

# a target ε of the DP sweep: positive, .inf (no DP) allowed, NaN refused by the validator
Epsilon = Annotated[float, Field(gt=0, allow_inf_nan=True)]


def _inf_text(value):
    """"inf" (how JSON and a stored config.yaml spell infinity) → float("inf"); anything else unchanged."""
    return float("inf") if isinstance(value, str) and value.strip().lower() in ("inf", ".inf", "infinity") else value


class DigitsStudyConfig(StudyConfig):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    attack: AttackConfig = AttackConfig()

    def _check_attack(self, attack: str | None, references: int) -> None:
        from ftaudit.attacks.registry import ATTACKS

        # UserError, not ValueError: it passes through pydantic and names the exact field
        if self.attack.targets > ensemble_size(references):
            raise UserError("attack.targets", f"{self.attack.targets} targets but only {ensemble_size(references)} "
                            "models are trained", f"use at most {ensemble_size(references)}, or 0 for all")
        if attack is not None:
            if attack not in ATTACKS:
                match = closest(attack, ATTACKS)
                raise UserError("sweep.attack", f"unknown attack {attack!r}",
                                (f"did you mean {match!r}? " if match else "") + f"choose from {', '.join(ATTACKS)}")
            if attack not in self.attack.names:
                raise UserError("sweep.attack", f"{attack!r} is not among attack.names",
                                f"add it to attack.names or choose one of {', '.join(self.attack.names)}")


class MIAAttackConfig(AttackConfig):
    references: int | None = Field(
        default=None, ge=1, le=MAX_REFERENCES,
        description="reference models per audit example the attacks use (even): k/2 IN and k/2 OUT drawn per "
                    "(target, example) from the target's finetune.references; offline attacks use the k/2 OUT "
                    "(null = all, balanced). Tests few references on a large ensemble without biasing the null: a "
                    "small ensemble, or the first k of a target's references, would let the target's own membership "
                    "decide which references are IN")


class FinetuneMIAConfig(DigitsStudyConfig):
    study: Literal["finetune-mia"] = "finetune-mia"
    finetune: FinetuneConfig = FinetuneConfig()
    attack: MIAAttackConfig = MIAAttackConfig()

    @model_validator(mode="after")
    def _targets(self) -> "FinetuneMIAConfig":
        self._check_attack(None, self.finetune.references)
        k, trained = self.attack.references, self.finetune.references
        if k is not None and k > trained:
            raise UserError("attack.references", f"{k} but only finetune.references = {trained} are trained per target",
                            f"use at most {trained}, or raise finetune.references")
        if k is not None and k % 2:
            raise UserError("attack.references", f"{k} is odd: each example uses half IN and half OUT references",
                            f"use an even number, e.g. {k + 1 if k + 1 <= trained else k - 1}")
        return self


class MethodsSweep(ConfigSection):
    """The grid of the ``methods`` study: every cell fine-tunes its own ensemble."""

    methods: list[str] = Field(default=["full", "head", "layers", "bitfit", "lora", "adapters"], min_length=1,
                               max_length=16, description="fine-tuning methods compared")
    lrs: list[LearningRate] = Field(default=[1e-3, 3e-3], min_length=1, max_length=16, description="learning rates per method")
    attack: str = Field(default="lira-online-global", description="the attack whose TPR/AUC measures each cell's leakage")
    match_tolerance: float = Field(default=0.01, ge=0, lt=1, description="accuracy slack when comparing at matched accuracy")

    @field_validator("methods")
    @classmethod
    def _known(cls, values: list[str]) -> list[str]:
        return [known_method(v) for v in values]


class MethodsFinetune(FinetuneConfig):
    """Every cell's recipe; ``method`` and ``lr`` pick the headline cell (the first cell when the grid lacks them)."""

    epochs: int = Field(default=20, ge=1, le=MAX_EPOCHS, description="fine-tuning epochs in every cell")
    references: int = Field(default=8, ge=2, le=MAX_REFERENCES, description="reference models per target in every cell")


class MethodsConfig(DigitsStudyConfig):
    study: Literal["methods"] = "methods"
    finetune: MethodsFinetune = MethodsFinetune()
    sweep: MethodsSweep = MethodsSweep()

    @model_validator(mode="after")
    def _attack(self) -> "MethodsConfig":
        self._check_attack(self.sweep.attack, self.finetune.references)
        return self


class DPAccounting(ConfigSection):
    """The DP-SGD settings every cell of the grid shares (ε and clipping are swept)."""

    delta: float | None = Field(default=None, gt=0, lt=1, description="target δ; null = 1e-5, or less than 1/N for small N")
    accountant: Literal["rdp", "prv"] = Field(default="rdp", description="Opacus accountant that calibrates the noise (rdp or prv)")
    sample_rate: float | None = Field(default=None, gt=0, le=1, description="Poisson sampling rate q; null = batch_size / rows")

    def at(self, epsilon: float, clip: float) -> DPConfig:
        return DPConfig(epsilon=epsilon, clip=clip, **self.model_dump())


class DPFinetune(TrainingRecipe, MethodConfig):
    """The DP fine-tunes' recipe. ``method`` is the method of the ensembles attacked at each ε
    (the frontier searches every method of ``sweep.subsets``); learning rate and clipping come from
    the search."""

    augment: int = Field(default=1, ge=0, le=2, description="train on random pixel shifts of up to this many pixels (0 = none)")
    epochs: int = Field(default=8, ge=1, le=MAX_EPOCHS, description="expected passes over the data (steps = epochs / q)")
    references: int = Field(default=8, ge=2, le=MAX_REFERENCES, description="reference models per target in the MIA "
                                                                            "ensembles")
    dp: DPAccounting = DPAccounting()

    def recipe(self, lr: float, epsilon: float, clip: float, method: str | None = None) -> FinetuneConfig:
        """The full fine-tuning config of one cell."""
        fields = self.model_dump(exclude={"dp"})
        return FinetuneConfig(**{**fields, "method": method or self.method, "lr": lr, "dp": self.dp.at(epsilon, clip)})


class DPSweep(ConfigSection):
    """The grid of the ``dp-finetune`` study."""

    epsilons: list[Epsilon] = Field(default=[0.5, 1.0, 2.0, 4.0, 8.0, float("inf")], min_length=1, max_length=32,
                                    description="target ε values (.inf = no DP)")
    subsets: list[str] = Field(default=["head", "layers", "full", "bitfit", "lora"], min_length=1, max_length=16,
                               description="fine-tuning methods (layer subsets) searched at each ε")
    lrs: list[LearningRate] = Field(default=[1e-3, 4e-3], min_length=1, max_length=16,
                                    description="learning rates searched per cell")
    clips: list[Annotated[float, Field(gt=0, le=1e6)]] = Field(default=[0.5, 2.0], min_length=1, max_length=16,
                                                               description="clipping norms searched per cell")
    attack: str = Field(default="lira-online-global", description="the attack whose TPR/AUC measures each ε's leakage "
                                                                  "and whose scores feed the empirical ε audits")
    canaries: int = Field(default=32, ge=0, le=1000, description="mislabelled canaries for the empirical ε audit (0 = off)")
    headline_epsilon: float | None = Field(default=None, gt=0, allow_inf_nan=True, description="ε whose ensemble the attack table, ROC and "
                                           "exposed examples show (one of epsilons); null = the smallest finite one")

    @field_serializer("epsilons", when_used="json")
    def _inf_as_text(self, values: list[float]) -> list:
        return [v if v != float("inf") else "inf" for v in values]  # JSON has no infinity; "inf" parses back

    @field_serializer("headline_epsilon", when_used="json")
    def _headline_inf(self, value: float | None):
        return "inf" if value == float("inf") else value

    @field_validator("epsilons", mode="before")
    @classmethod
    def _epsilons_text(cls, values):
        return [_inf_text(v) for v in values] if isinstance(values, list) else values

    @field_validator("headline_epsilon", mode="before")
    @classmethod
    def _headline_text(cls, value):
        return _inf_text(value)

    @field_validator("epsilons")
    @classmethod
    def _finite_or_inf(cls, values: list[float]) -> list[float]:
        if any(v != v or (v != float("inf") and v > MAX_EPSILON) for v in values):
            raise ValueError(f"epsilons must be positive numbers up to {MAX_EPSILON:g}, or .inf for no DP")
        return values

    @field_validator("subsets")
    @classmethod
    def _known(cls, values: list[str]) -> list[str]:
        return [known_method(v) for v in values]

    @model_validator(mode="after")
    def _valid(self) -> "DPSweep":
        if self.headline_epsilon is not None and self.headline_epsilon not in self.epsilons:
            raise field_error(("headline_epsilon",), f"{self.headline_epsilon:g} is not one of epsilons {self.epsilons}",
                              self.headline_epsilon)
        return self

    @property
    def headline(self) -> float:
        finite = [e for e in self.epsilons if e != float("inf")]
        return self.headline_epsilon if self.headline_epsilon is not None else (min(finite) if finite else self.epsilons[0])


class DPFinetuneConfig(DigitsStudyConfig):
    study: Literal["dp-finetune"] = "dp-finetune"
    finetune: DPFinetune = DPFinetune()
    sweep: DPSweep = DPSweep()

    @model_validator(mode="after")
    def _attack(self) -> "DPFinetuneConfig":
        self._check_attack(self.sweep.attack, self.finetune.references)
        return self
