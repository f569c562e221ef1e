"""Run specifications: the YAML schema, as pydantic models.

A run is fully described by a :class:`RunConfig`. Defaults are the embedded ``finetune-mia`` study
on digits; a YAML file (``--config``) and ``--set key=value`` overrides are merged on top, then
validated strictly (unknown keys are errors, never ignored). Every user mistake becomes a
:class:`~ftaudit.errors.UserError` naming the dotted field and the fix.
"""
from __future__ import annotations

import re

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, field_serializer, field_validator, model_validator

from ftaudit.errors import UserError


def known_method(value: str) -> str:
    """A fine-tuning method's name, checked against the registry (validators of every section that names one)."""
    from ftaudit.finetune.methods import METHODS

    if value not in METHODS:
        raise ValueError(f"unknown fine-tuning method {value!r}; choose one of {', '.join(METHODS)}")
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
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
        return self


class ModelConfig(Section):
    arch: Literal["mlp", "cnn"] = Field(default="cnn", description="small CNN (3x3 convs) or MLP")
    hidden: list[int] = Field(default=[128, 64], min_length=1, description="mlp: hidden widths")
    channels: list[int] = Field(default=[32, 64], min_length=1, description="cnn: conv channels")

    @model_validator(mode="after")
    def _positive(self) -> "ModelConfig":
        for name in ("hidden", "channels"):
            if any(v < 1 for v in getattr(self, name)):
                raise ValueError(f"{name} must be positive widths")
        return self


class OptimConfig(Section):
    optimizer: Literal["sgd", "adam"] = Field(default="adam", description="adam or sgd (torch.optim)")
    lr: float = Field(default=1e-3, gt=0, description="learning rate")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="sgd momentum")
    weight_decay: float = Field(default=0.0, ge=0, description="L2 weight decay")
    epochs: int = Field(default=40, ge=1, description="passes over each model's training rows")
    batch_size: int = Field(default=32, ge=1, description="largest mini-batch")
    augment: int = Field(default=0, ge=0, le=2, description="train on random pixel shifts of up to this many pixels (0 = none)")


class PretrainConfig(OptimConfig):
    epochs: int = Field(default=30, ge=1, description="passes over the public pretraining pool")
    augment: int = Field(default=1, ge=0, le=2, description="train on random pixel shifts of up to this many pixels (0 = none)")


class DPConfig(Section):
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


class FinetuneConfig(OptimConfig):
    method: str = Field(default="full", description="what fine-tuning trains: full, head, layers, bitfit, lora, adapters")
    layers: list[str] = Field(default=[], description="method=layers: blocks/parameters to train, e.g. [block2, head]")
    last_k: int = Field(default=1, ge=0, description="method=layers with no `layers`: the last k blocks plus the head")
    lora_rank: int = Field(default=4, ge=1, description="method=lora: rank r of each update")
    lora_alpha: float = Field(default=8.0, gt=0, description="method=lora: scaling alpha (update × alpha / r)")
    lora_targets: list[str] = Field(default=[], description="method=lora: module names; [] = every Linear/Conv of the body")
    adapter_size: int = Field(default=16, ge=1, description="method=adapters: bottleneck width")
    adapter_targets: list[str] = Field(default=[], description="method=adapters: module names; [] = each block's last projection")
    train_head: bool = Field(default=True, description="bitfit/lora/adapters: train the task head too")
    dp: DPConfig = DPConfig()
    references: int = Field(default=16, ge=2, description="reference models per target (LiRA/RMIA)")
    epochs: int = Field(default=60, ge=1, description="passes over each model's keep-row")
    lr: float = Field(default=1e-3, gt=0, description="learning rate")
    augment: int = Field(default=1, ge=0, le=2, description="train on random pixel shifts of up to this many pixels (0 = none)")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return known_method(value)

    @property
    def n_models(self) -> int:
        """Models trained: every target needs `references` others; the keep-matrix needs an even count."""
        m = self.references + 1
        return m + (m % 2)


class AttackConfig(Section):
    names: list[str] = Field(
        default=["loss", "reference", "lira-online", "lira-online-global", "lira-offline",
                 "lira-offline-global", "rmia-online", "rmia-offline"], min_length=1, description="attacks to run")
    params: dict[str, dict[str, float]] = Field(default_factory=dict, description="per-attack parameters, e.g. rmia-online: {gamma: 2}")
    targets: int = Field(default=0, ge=0, description="models that take a turn as target; 0 = all")
    shifts: int = Field(default=1, ge=0, le=2, description="pixel shifts queried: 0 = original only, k = +-1..k in x and y")


class MetricsConfig(Section):
    fprs: list[float] = Field(default=[0.001, 0.01, 0.1], min_length=1, description="FPRs at which TPR is reported")
    bootstrap: int = Field(default=1000, ge=10, description="bootstrap replicates (resampling audit examples)")
    ci_level: float = Field(default=0.95, gt=0.5, lt=1, description="confidence level of every interval")
    exposed: int = Field(default=12, ge=0, description="most exposed examples shown in the report")

    @model_validator(mode="after")
    def _fprs(self) -> "MetricsConfig":
        if any(not 0 < f < 1 for f in self.fprs):
            raise ValueError("fprs must lie strictly between 0 and 1")
        return self


class SweepConfig(Section):
    """The grids of the ``methods`` and ``dp-finetune`` studies (every cell fine-tunes its own ensemble)."""

    methods: list[str] = Field(default=["full", "head", "layers", "bitfit", "lora", "adapters"], min_length=1,
                               description="methods: fine-tuning methods compared")
    lrs: list[float] = Field(default=[1e-3, 3e-3], min_length=1, description="methods: learning rates per method")
    references: int = Field(default=8, ge=2, description="reference models per target in every cell")
    epochs: int = Field(default=20, ge=1, description="methods: fine-tuning epochs in every cell")
    attack: str = Field(default="lira-online-global", description="the attack whose TPR/AUC measures each cell's leakage")
    match_tolerance: float = Field(default=0.01, ge=0, lt=1, description="methods: accuracy slack when comparing at matched accuracy")
    epsilons: list[float] = Field(default=[0.5, 1.0, 2.0, 4.0, 8.0, float("inf")], min_length=1,
                                  description="dp-finetune: target ε values (.inf = no DP)")
    subsets: list[str] = Field(default=["head", "layers", "full", "bitfit", "lora"], min_length=1,
                               description="dp-finetune: fine-tuning methods (layer subsets) searched at each ε")
    dp_lrs: list[float] = Field(default=[1e-3, 4e-3], min_length=1, description="dp-finetune: learning rates searched per cell")
    clips: list[float] = Field(default=[0.5, 2.0], min_length=1, description="dp-finetune: clipping norms searched per cell")
    dp_epochs: int = Field(default=8, ge=1, description="dp-finetune: expected passes over the data (steps = epochs / q)")
    dp_mia_method: str = Field(default="full", description="dp-finetune: method of the ensembles attacked at each ε")
    canaries: int = Field(default=32, ge=0, description="dp-finetune: mislabelled canaries for the empirical ε audit (0 = off)")

    @field_serializer("epsilons", when_used="json")
    def _inf_as_text(self, values: list[float]) -> list:
        return [v if v != float("inf") else "inf" for v in values]  # JSON has no infinity; "inf" parses back

    @model_validator(mode="after")
    def _valid(self) -> "SweepConfig":
        from ftaudit.finetune.methods import METHODS

        for name in self.methods + self.subsets + [self.dp_mia_method]:
            if name not in METHODS:
                raise ValueError(f"unknown fine-tuning method {name!r}; choose from {', '.join(METHODS)}")
        if any(v <= 0 for v in self.lrs + self.dp_lrs + self.clips + self.epsilons):
            raise ValueError("learning rates, clipping norms and epsilons must be positive")
        return self


class EngineConfig(Section):
    vectorized: bool = Field(default=True, description="train compatible models together with torch.func")
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


class ForgettingConfig(Section):
    """Scenario ``forgetting`` (Jagielski et al. 2022): how exposure fades once training moves on."""

    schedules: list[Literal["inject", "poison"]] = Field(
        default=["inject", "poison"], min_length=1,
        description="inject: the injected set enters mid-training r times, then training goes on; poison: the set "
                    "is trained on first, as its own phase, then training continues on the other data")
    determinism: Literal["both", "deterministic", "nondeterministic"] = Field(
        default="both", description="deterministic: all models share one seed (init, data order, augmentation) and "
                                    "deterministic kernels, so IN and OUT models differ only by the injected examples")
    arch: Literal["mlp", "cnn"] = Field(default="mlp", description="network trained (widths from model.hidden / model.channels)")
    models: int = Field(default=16, ge=4, description="models per run (even): each takes a turn as target, the others are its references")
    train_size: int = Field(default=1000, ge=1, description="digits every model trains on throughout (never injected)")
    population_size: int = Field(default=200, ge=2, description="held-out digits: test accuracy and RMIA population")
    per_repetition: int = Field(default=50, ge=2, description="injected digits per repetition count (each IN for half the models)")
    mislabel: bool = Field(default=True, description="injected digits carry a random wrong label: outliers the models must "
                                                     "memorize (false: their true labels)")
    repetitions: list[int] = Field(default=[1, 2, 4, 8], min_length=1, description="inject: times an injected example is seen")
    inject_step: int = Field(default=400, ge=0, description="inject: step (0-based) ending the last injection pass")
    repeat_gap: int = Field(default=40, ge=1, description="inject: steps between the starts of consecutive passes")
    inject_per_step: int = Field(default=16, ge=1, description="inject: injected examples placed in each step of a pass")
    poison_epochs: int = Field(default=30, ge=1, description="poison: passes over the sensitive set before the other data")
    checkpoints: list[int] = Field(
        default=[0, 10, 25, 50, 100, 200, 400, 800, 1600], min_length=2,
        description="steps since the injected set was last seen at which signals are measured; training ends at the last")
    optimizer: Literal["sgd", "adam"] = Field(default="adam", description="adam or sgd (torch.optim)")
    lr: float = Field(default=1e-2, gt=0, description="learning rate (high enough that a few passes leave a trace)")
    batch_size: int = Field(default=32, ge=1, description="mini-batch of the training data (injected rows come on top)")
    augment: int = Field(default=1, ge=0, le=2, description="train on random pixel shifts of up to this many pixels (0 = none)")
    attack: str = Field(default="lira-online", description="the attack whose AUC / TPR the decay curves show")

    @model_validator(mode="after")
    def _valid(self) -> "ForgettingConfig":
        if self.models % 2:
            raise ValueError(f"models must be even (a half keep-matrix), got {self.models}")
        increasing_counts("repetitions", self.repetitions)
        if len(set(self.schedules)) != len(self.schedules):
            raise ValueError(f"schedules must not repeat, got {self.schedules}")
        if self.checkpoints != sorted(set(self.checkpoints)) or self.checkpoints[0] < 0 or self.checkpoints[-1] < 1:
            raise ValueError(f"checkpoints must be increasing step counts >= 0 ending >= 1, got {self.checkpoints}")
        return self

    @property
    def steps_after(self) -> int:
        """Training steps after the injected set was last seen."""
        return self.checkpoints[-1]


class TMICommon(Section):
    """What the two TMI scenarios share (Abascal et al., PETS 2024): membership in the PRETRAINING set,
    inferred from queries to the fine-tuned model with one metaclassifier per challenge point."""

    shadows: int = Field(default=32, ge=4, description="shadow models (even): each pretrained on a random half of the "
                                                        "pool, then fine-tuned; every one takes a turn as victim")
    pretrain_epochs: int = Field(default=60, ge=1, description="passes over each shadow's half of the pool")
    method: str = Field(default="head", description="fine-tuning method of the headline")
    finetune_epochs: int = Field(default=20, ge=1, description="fine-tuning passes over the downstream data")
    lrs: dict[str, float] = Field(default={"head": 1e-2, "bitfit": 1e-2, "layers": 3e-3, "lora": 3e-3,
                                           "adapters": 3e-3, "full": 1e-3},
                                  description="fine-tuning learning rate per method")
    augmentations: int = Field(default=8, ge=1, description="queries A per challenge point: the original and A - 1 "
                                                            "random views")
    victims: int = Field(default=0, ge=0, description="headline: shadows that take a turn as victim; 0 = all")
    meta_hidden: int = Field(default=64, ge=1, description="metaclassifier hidden width")
    meta_epochs: int = Field(default=20, ge=1, description="metaclassifier training epochs")
    balance: bool = Field(default=True, description="train each metaclassifier on equally many IN and OUT shadows "
                                                    "(leave-one-out otherwise biases members low)")
    sweep_victims: int = Field(default=8, ge=1, description="victims per sweep cell (the first ones)")
    shadow_counts: list[int] = Field(default=[8, 16, 32], description="sweep: shadow models (subsets of the trained ones)")
    methods: list[str] = Field(default=["head", "lora", "full"], description="sweep: fine-tuning methods")
    epsilons: list[float] = Field(default=[1.0, 8.0], description="sweep: target ε of DP fine-tuning with `method` "
                                                                   "(δ, clip, accountant from finetune.dp); [] = off")
    augmentation_counts: list[int] = Field(default=[1, 2, 4, 8], description="sweep: queries per point (subsets)")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return known_method(value)

    @model_validator(mode="after")
    def _valid(self) -> "TMICommon":
        from ftaudit.finetune.methods import METHODS

        if self.shadows % 2:
            raise ValueError(f"shadows must be even (a half keep-matrix), got {self.shadows}")
        for name in self.methods + [self.method]:
            if name not in METHODS:
                raise ValueError(f"unknown fine-tuning method {name!r}; choose from {', '.join(METHODS)}")
            if name not in self.lrs:
                raise ValueError(f"no learning rate for method {name!r} in lrs; add it, e.g. lrs.{name}=0.003")
        if any(v <= 0 for v in self.lrs.values()) or any(not 0 < e < float("inf") for e in self.epsilons):
            raise ValueError("learning rates and epsilons must be positive and finite (the no-DP cell is the headline)")
        if any(not 2 <= s <= self.shadows for s in self.shadow_counts):
            raise ValueError(f"shadow_counts must lie in [2, shadows = {self.shadows}], got {self.shadow_counts}")
        if any(not 1 <= a <= self.augmentations for a in self.augmentation_counts):
            raise ValueError(f"augmentation_counts must lie in [1, augmentations = {self.augmentations}], "
                             f"got {self.augmentation_counts}")
        if self.victims > self.shadows:
            raise ValueError(f"victims ({self.victims}) exceeds shadows ({self.shadows})")
        return self


class TMIConfig(TMICommon):
    """Scenario ``tmi`` on digits: pretrain on data.pretrain_classes, fine-tune a new head on data.finetune_classes."""

    pool: int = Field(default=400, ge=8, description="pretraining pool = challenge points (digits of data.pretrain_classes)")
    mislabel: float = Field(default=0.25, ge=0, lt=1, description="share of the pool given a random wrong label: "
                                                                  "outliers a model can only fit by memorizing them")
    finetune_size: int = Field(default=400, ge=10, description="downstream training digits (data.finetune_classes), "
                                                               "the same for every shadow")
    arch: Literal["mlp", "cnn"] = Field(default="mlp", description="network (widths from model.hidden / model.channels)")
    pretrain_augment: int = Field(default=0, ge=0, le=2, description="pretraining pixel-shift augmentation (0 = none)")
    query_shift: int = Field(default=0, ge=0, le=2, description="views: random pixel shift of up to this many pixels")
    query_noise: float = Field(default=0.05, ge=0, description="views: std of the Gaussian pixel noise (pixels in [0, 1])")


class TMITextConfig(TMICommon):
    """Scenario ``tmi-text``: a tiny GPT-2 pretrained on blocks of one corpus, fine-tuned on another."""

    shadows: int = Field(default=16, ge=4, description="shadow LMs (even): each pretrained on a random half of the "
                                                        "block pool, then fine-tuned; every one takes a turn as victim")
    shadow_counts: list[int] = Field(default=[4, 8, 16], description="sweep: shadow models (subsets of the trained ones)")
    pretrain_epochs: int = Field(default=12, ge=1, description="passes over each shadow's half of the block pool")
    method: str = Field(default="full", description="fine-tuning method of the headline (head = the LM head only)")
    finetune_epochs: int = Field(default=3, ge=1, description="fine-tuning passes over the downstream blocks")
    lrs: dict[str, float] = Field(default={"head": 1e-2, "bitfit": 1e-2, "layers": 3e-3, "lora": 3e-3,
                                           "adapters": 3e-3, "full": 3e-3},
                                  description="fine-tuning learning rate per method")
    methods: list[str] = Field(default=["head", "full"], description="sweep: fine-tuning methods")
    meta_epochs: int = Field(default=60, ge=1, description="metaclassifier training epochs (a few shadows' rows need "
                                                           "more than the study's 20)")
    epsilons: list[float] = Field(default=[8.0], description="sweep: target ε of DP fine-tuning with `method` "
                                                              "(δ, clip, accountant from finetune.dp); [] = off")
    pretrain_corpus: str = Field(default="wikitext2", description="corpus whose blocks are the pool (challenge points)")
    finetune_corpus: str = Field(default="shakespeare", description="downstream corpus (the same blocks for every shadow)")
    block_len: int = Field(default=32, ge=4, description="tokens per block (the membership unit)")
    pool: int = Field(default=128, ge=8, description="pretraining blocks = challenge points")
    finetune_blocks: int = Field(default=128, ge=8, description="downstream blocks")
    vocab_size: int = Field(default=512, ge=261, description="byte-level BPE trained on both corpora")
    n_layer: int = Field(default=2, ge=1, description="GPT-2 layers")
    n_embd: int = Field(default=64, ge=8, description="GPT-2 width")
    n_head: int = Field(default=2, ge=1, description="GPT-2 attention heads (divides n_embd)")
    pretrain_lr: float = Field(default=1e-2, gt=0, description="pretraining learning rate (Adam)")
    batch_size: int = Field(default=8, ge=1, description="pretraining and fine-tuning mini-batch (blocks)")
    perturb: float = Field(default=0.1, ge=0, lt=1, description="views: share of a block's tokens replaced by random "
                                                                "tokens of the pool")

    @model_validator(mode="after")
    def _heads(self) -> "TMITextConfig":
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head ({self.n_head}) must divide n_embd ({self.n_embd})")
        return self


class LMConfig(Section):
    """The language-model scenarios (lm-mia, mlm-ratio, lm-methods): text, tokenizer, model and recipe.
    They read the fine-tuning method, its options, the optimizer and finetune.references from
    ``finetune``, but epochs, learning rates and batch size from here (text needs other values than
    digits); setting finetune.epochs/lr/batch_size or pretrain.* for them is an error naming these keys."""

    model: str = Field(default="tiny", description="tiny: the scenario's own tiny model (GPT-2 for lm-mia/lm-methods, BERT "
                                                   "for mlm-ratio), pretrained here on pretrain_corpus; tiny-gpt2 / tiny-bert "
                                                   "name one; anything else is a local save_pretrained directory or a hub id "
                                                   "(used as the pretrained base with its own tokenizer, no pretraining)")
    pretrain_corpus: str = Field(default="wikitext2", description="public text the tiny base is pretrained on (bundled "
                                                                  "name, .txt/.jsonl/.csv file, or HF dataset)")
    finetune_corpus: str = Field(default="wikitext2-test", description="private text: the audit blocks, the held-out "
                                                                       "population and the disjoint reference's blocks "
                                                                       "(shakespeare: a domain shift from the base)")
    vocab_size: int = Field(default=1024, ge=261, description="byte-level BPE trained on both corpora (tiny models)")
    block_len: int = Field(default=32, ge=4, description="tokens per block, the membership unit")
    n_blocks: int = Field(default=256, ge=4, description="audit pool: blocks under the keep-matrix (each model trains on half)")
    population: int = Field(default=128, ge=2, description="held-out blocks of finetune_corpus: validation perplexity and "
                                                           "the RMIA population")
    pretrain_blocks: int = Field(default=0, ge=0, description="blocks of pretrain_corpus the tiny base trains on (0 = all)")
    n_layer: int = Field(default=2, ge=1, description="tiny model: transformer layers")
    n_embd: int = Field(default=64, ge=8, description="tiny model: width")
    n_head: int = Field(default=2, ge=1, description="tiny model: attention heads (divides n_embd)")
    pretrain_epochs: int = Field(default=3, ge=1, description="tiny base: passes over the pretraining blocks")
    pretrain_lr: float = Field(default=3e-3, gt=0, description="tiny base: learning rate")
    finetune_epochs: int = Field(default=1, ge=1, description="causal LMs: fine-tuning passes over each model's half of the "
                                                               "audit pool")
    mlm_epochs: int = Field(default=4, ge=1, description="masked LMs: fine-tuning passes (only 15 % of the tokens carry a "
                                                          "loss, so they need more passes than causal LMs)")
    finetune_lr: float = Field(default=1e-3, gt=0, description="fine-tuning learning rate (lm-methods: its headline cell)")
    batch_size: int = Field(default=16, ge=1, description="blocks per step, pretraining and fine-tuning")
    reference: str = Field(default="disjoint", description="reference model of the ratio attacks besides the base (always "
                                                           "used): disjoint = one fine-tuned from the base on other "
                                                           "blocks of finetune_corpus; base = the base only; or a local "
                                                           "directory / hub id of a model with the same tokenizer")
    maskings: int = Field(default=8, ge=1, description="masked LMs: random 15 % maskings averaged in the MLM-loss signal")
    methods: list[str] = Field(default=["full", "head", "adapters", "lora"], min_length=1,
                               description="lm-methods: fine-tuning methods compared")
    lrs: list[float] = Field(default=[1e-3, 3e-3, 1e-2], min_length=1, description="lm-methods: learning rates per method")
    method_references: int = Field(default=7, ge=2, description="lm-methods: reference models per target in every cell")
    method_attack: str = Field(default="lm-ratio", description="lm-methods: the attack whose recall at 10 % / 1 % FPR "
                                                               "measures each cell's leakage")
    canaries: int = Field(default=8, ge=0, description="lm-methods: canaries ('the secret number is' + 6 random digits) "
                                                       "every model also trains on, for the exposure column; 0 = none")
    canary_repeats: int = Field(default=4, ge=1, description="lm-methods: copies of each canary in the fine-tuning data")
    canary_references: int = Field(default=500, ge=3, description="lm-methods: never-inserted secrets each canary's "
                                                                  "exposure is measured against (rank exposure ≤ log2 of "
                                                                  "this + 1; the skew-normal estimate goes beyond)")

    @model_validator(mode="after")
    def _valid(self) -> "LMConfig":
        from ftaudit.finetune.methods import METHODS

        if self.n_embd % self.n_head:
            raise ValueError(f"n_head ({self.n_head}) must divide n_embd ({self.n_embd})")
        for name in self.methods:
            if name not in METHODS:
                raise ValueError(f"unknown fine-tuning method {name!r}; choose from {', '.join(METHODS)}")
        if any(v <= 0 for v in self.lrs):
            raise ValueError("learning rates must be positive")
        return self


class ExtractionConfig(Section):
    """Scenario ``lm-extraction``: canary exposure (Carlini et al. 2019) and extraction by generation
    (Carlini et al. 2021). Corpora, tokenizer, tiny model, pretraining and batch size come from ``lm``;
    the fine-tuning method from ``finetune``; its epochs and learning rate, and the rest, from here."""

    repetitions: list[int] = Field(default=[1, 2, 4, 8, 16], min_length=1,
                                   description="times a canary is inserted into the fine-tuning blocks; each count "
                                               "has its own canaries, all in one fine-tuning run")
    canaries: int = Field(default=8, ge=2, description="canaries per repetition count (the CI of mean exposure is over them)")
    references: int = Field(default=5000, ge=5000, description="reference canaries: secrets of the same format never "
                                                               "inserted, the set exposure ranks against")
    canary_prefix: str = Field(default="the secret number is", min_length=1,
                               description="the canary's fixed text; one space and the secret follow it")
    canary_digits: int = Field(default=6, ge=4, le=12, description="random decimal digits of each secret")
    finetune_blocks: int = Field(default=1024, ge=8, description="fine-tuning blocks of lm.finetune_corpus; each insertion "
                                                                "of a canary overwrites the start of its own block")
    finetune_epochs: int = Field(default=6, ge=1, description="fine-tuning passes over the blocks")
    finetune_lr: float = Field(default=1e-3, gt=0, description="fine-tuning learning rate")
    prompts: int = Field(default=16, ge=2, description="extraction: fine-tuning blocks per repetition count whose prefixes "
                                                       "prompt the model, each in the data r times (copies) and none with a "
                                                       "canary; as many held-out blocks in all are the control")
    prefix_len: int = Field(default=16, ge=1, description="extraction: prompt tokens (the start of a block)")
    suffix_len: int = Field(default=8, ge=1, description="extraction: tokens sampled, matched verbatim against the block's "
                                                          "next tokens (prefix_len + suffix_len <= lm.block_len)")
    samples: int = Field(default=8, ge=1, description="extraction: continuations sampled per prompt")
    top_k: int = Field(default=40, ge=0, description="extraction: sample among the k most likely tokens (0 = all)")
    temperature: float = Field(default=1.0, gt=0, description="extraction: sampling temperature")
    budgets: list[float] = Field(default=[0.25, 1.0], min_length=1,
                                 description="extraction: candidates kept per prompt on average (the top-ranked overall)")

    @model_validator(mode="after")
    def _valid(self) -> "ExtractionConfig":
        increasing_counts("repetitions", self.repetitions)
        if any(not b > 0 for b in self.budgets):
            raise ValueError("budgets must be positive")
        needed = (self.canaries * sum(self.repetitions) + self.prompts * len(self.repetitions))
        if needed > self.finetune_blocks:
            raise ValueError(f"{self.canaries} canaries × {sum(self.repetitions)} insertions + {self.prompts} × "
                             f"{len(self.repetitions)} prompt blocks need {needed} distinct fine-tuning blocks, "
                             f"finetune_blocks is {self.finetune_blocks}")
        if 10 ** self.canary_digits < self.references + self.canaries * len(self.repetitions):
            raise ValueError(f"{self.canary_digits} digits give too few distinct secrets for the canaries and references")
        return self


CANDIDATE = re.compile(r"^(\d+)x(\d+):([A-Za-z0-9_.-]+):(\d+)$")


class StealingConfig(Section):
    """Scenario ``stealing``: identify a black-box classifier's public base (latency, outputs),
    estimate its weights from that base by distillation, and extract only what fine-tuning changed."""

    candidates: list[str] = Field(
        default=["2x64:wikitext2:0", "2x64:wikitext2:1", "2x64:shakespeare:0", "4x64:wikitext2:0", "2x128:wikitext2:0"],
        min_length=2, description="public tiny BERT bases, 'LAYERSxWIDTH:CORPUS:SEED' (pretrained here, stored as HF "
                                  "directories); the victims are fine-tuned from each")
    block_len: int = Field(default=64, ge=8, description="tokens per input, a leading [CLS] included (every block, "
                                                          "query and task example of this scenario)")
    pretrain_blocks: int = Field(default=1536, ge=8, description="MLM pretraining blocks per candidate")
    pretrain_epochs: int = Field(default=12, ge=1, description="MLM pretraining passes per candidate")
    pretrain_lr: float = Field(default=3e-3, gt=0, description="MLM pretraining learning rate")
    task_corpus: str = Field(default="wikitext2-test", description="the victims' task: which of the `classes` longest "
                                                                   "articles of this corpus a block comes from")
    classes: int = Field(default=4, ge=2, description="task classes (articles)")
    train_per_class: int = Field(default=96, ge=4, description="victim training blocks per class")
    test_per_class: int = Field(default=48, ge=2, description="held-out blocks per class: agreement and accuracy")
    victim_methods: list[str] = Field(default=["full", "lora", "head"], min_length=1,
                                      description="fine-tuning methods of the victims (finetune.* options apply)")
    victim_seeds: int = Field(default=2, ge=1, description="victims per (candidate, method): head init and data order")
    pooling: Literal["mean", "cls"] = Field(default="mean", description="what the classifiers' pooler reads: the mean "
                                            "of the last hidden states, or the [CLS] position (HF's BERT; MLM-only tiny "
                                            "bases carry little there)")
    victim_epochs: int = Field(default=12, ge=1, description="victim fine-tuning passes")
    victim_lrs: dict[str, PositiveFloat] = Field(default={"full": 3e-4, "lora": 1e-3, "head": 1e-2},
                                         description="victim fine-tuning learning rate per method (one for each of "
                                                     "victim_methods)")
    top1: bool = Field(default=False, description="the API returns only the top-1 label (else probabilities)")
    queries: Literal["natural", "random"] = Field(default="natural", description="attacker's queries: blocks of "
                                                  "query_corpus, or uniformly random tokens")
    query_corpus: str = Field(default="wikitext2", description="public text the attacker queries with")
    id_budgets: list[int] = Field(default=[8, 32, 128], min_length=1, description="queries for base identification "
                                                                                 "from outputs")
    latency_lengths: list[int] = Field(default=[8, 32], min_length=1, description="latency profile: input lengths")
    latency_batches: list[int] = Field(default=[1, 16], min_length=1, description="latency profile: batch sizes")
    latency_repeats: int = Field(default=5, ge=1, description="latency profile: timed calls per cell (median)")
    distill_victims: int = Field(default=1, ge=1, description="victims per method whose weights are estimated "
                                                             "(those of the first candidate)")
    budgets: list[int] = Field(default=[64, 256, 1024], min_length=1, description="distillation: queries answered")
    distill_steps: int = Field(default=200, ge=1, description="distillation: optimiser steps (epochs = steps × batch / "
                                                              "queries, at least 1)")
    distill_lr: float = Field(default=1e-3, gt=0, description="distillation learning rate")
    batch_size: int = Field(default=16, ge=1, description="batch size of every training here")
    prune_fractions: list[float] = Field(default=[0.0, 0.01, 0.05, 0.2, 1.0], min_length=1,
                                         description="pruning: share of encoder elements trained (0 = head only, "
                                                     "1 = all), at the largest budget")
    prune_score: Literal["snr", "fisher"] = Field(default="snr", description="pruning: how encoder elements are ranked "
                                                  "at the head-distilled point: snr = |Σ gradient| / √Σ gradient² over "
                                                  "query batches (what Adam's steps follow), fisher = Σ gradient²")

    @model_validator(mode="after")
    def _valid(self) -> "StealingConfig":
        for c in self.candidates:
            if not CANDIDATE.match(c):
                raise ValueError(f"candidate {c!r} is not 'LAYERSxWIDTH:CORPUS:SEED' (e.g. '2x64:wikitext2:0')")
        if len(set(self.candidates)) != len(self.candidates):
            raise ValueError("candidates must not repeat")
        for m in self.victim_methods:
            known_method(m)
        missing = [m for m in self.victim_methods if m not in self.victim_lrs]
        if missing:
            raise ValueError(f"victim_lrs has no learning rate for {', '.join(missing)} (give one per victim method)")
        increasing_counts("budgets", self.budgets)
        increasing_counts("id_budgets", self.id_budgets)
        if min(self.id_budgets) < 4:
            raise ValueError("id_budgets must be at least 4 (the probe is cross-fitted on two halves)")
        if any(not 0.0 <= p <= 1.0 for p in self.prune_fractions):
            raise ValueError("prune_fractions must lie in [0, 1]")
        if max(self.latency_lengths) > self.block_len or min(self.latency_lengths) < 1:
            raise ValueError(f"latency_lengths must lie in [1, block_len = {self.block_len}] (the models' positions)")
        return self


class RunConfig(Section):
    scenario: str = Field(default="finetune-mia", description="the study to run (`ftaudit scenarios`)")
    seed: int = Field(default=0, ge=0, description="run seed; every job's seed derives from it")
    out: str = Field(default="ftaudit-runs", description="store directory: database, model cache, runs")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    attack: AttackConfig = AttackConfig()
    metrics: MetricsConfig = MetricsConfig()
    engine: EngineConfig = EngineConfig()
    sweep: SweepConfig = SweepConfig()
    forgetting: ForgettingConfig = ForgettingConfig()
    tmi: TMIConfig = TMIConfig()
    tmi_text: TMITextConfig = TMITextConfig()
    lm: LMConfig = LMConfig()
    extraction: ExtractionConfig = ExtractionConfig()
    stealing: StealingConfig = StealingConfig()

    @model_validator(mode="after")
    def _consistent(self) -> "RunConfig":
        if self.data.split == "classes" and set(self.data.pretrain_classes) & set(self.data.finetune_classes):
            raise ValueError("data.pretrain_classes and data.finetune_classes must not overlap")
        return self


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


def build_config(scenario: str | None = None, config_file: str | Path | None = None,
                 overrides: list[str] | None = None, **kwargs: Any) -> RunConfig:
    """Merge file < overrides < keyword arguments (``finetune__epochs=5`` or ``epochs=5`` shortcuts)."""
    tree: dict = read_config_file(config_file) if config_file else {}
    for text in overrides or []:
        path, value = parse_override(text)
        _set_path(tree, path, value)
    for key, value in kwargs.items():
        _set_path(tree, _kwarg_path(key), value)
    if scenario is not None:
        tree["scenario"] = scenario
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise _first_error(exc) from None


def _kwarg_path(key: str) -> list[str]:
    """API shortcut: ``finetune__epochs`` → finetune.epochs; a bare key is looked up across sections
    (the fine-tuning section wins when several have it)."""
    if "__" in key:
        return key.split("__")
    if key in RunConfig.model_fields:
        return [key]
    owners = [name for name, f in RunConfig.model_fields.items()
              if isinstance(f.default, BaseModel) and key in type(f.default).model_fields]
    if len(owners) == 1:
        return [owners[0], key]
    if "finetune" in owners:  # ftaudit.run(..., epochs=30) means the fine-tuning's epochs
        return ["finetune", key]
    if not owners:
        raise UserError(key, "unknown config key", "use section__key, e.g. finetune__epochs=10")
    raise UserError(key, f"ambiguous: it exists in {', '.join(owners)}", f"use e.g. {owners[-1]}__{key}")


def config_keys() -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every leaf: the README table is generated from this."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], instance: BaseModel, prefix: str) -> None:
        for name, field in model.model_fields.items():
            value = getattr(instance, name)
            if isinstance(value, BaseModel):
                walk(type(value), value, f"{prefix}{name}.")
            else:
                rows.append((prefix + name, repr(value) if not isinstance(value, str) else value, field.description or ""))

    walk(RunConfig, RunConfig(), "")
    return rows
