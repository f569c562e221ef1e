"""The configs of the two TMI studies: ``tmi`` (:class:`TMIStudyConfig`) and ``tmi-text``
(:class:`TMITextStudyConfig`).

Both name their own section ``tmi`` (the shadows, the fine-tuning recipe per method, the
metaclassifiers, the sweeps). Besides it each has only what it reads: the digits study its data
classes (``data``), network widths (``model``), pretraining optimiser (``pretrain``) and the
fine-tuning options that ``tmi.*`` does not set (``finetune``: optimiser, batch, method options,
DP); the text study only the latter, without batch size and augmentation (``tmi.batch_size``).
The fine-tuning method, epochs and learning rates are ``tmi.method`` / ``tmi.finetune_epochs`` /
``tmi.lrs`` (one rate per method: the sweep fine-tunes with several).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, create_model, field_validator, model_validator

from ftaudit.config import (DIGITS, MAX_BATCH, MAX_BLOCKS, MAX_EPOCHS, MAX_EPSILON, MAX_LAYERS, MAX_REFERENCES, MAX_WIDTH,
                            ConfigSection, FinetuneConfig, LearningRate, MethodOptionsConfig, PretrainConfig, StudyConfig,
                            Width, check_classes, field_error, known_method)


def section_of(base: type[ConfigSection], fields: list[str], name: str, doc: str) -> type[ConfigSection]:
    """A section with only ``fields`` of ``base`` (same types, defaults, bounds and descriptions)."""
    spec = {f: (base.model_fields[f].annotation, base.model_fields[f]) for f in fields}
    return create_model(name, __base__=ConfigSection, __doc__=doc, __module__=__name__, **spec)


_METHOD_OPTIONS = list(MethodOptionsConfig.model_fields)
TMIFinetuneConfig = section_of(
    FinetuneConfig, ["optimizer", "momentum", "weight_decay", "batch_size", "augment", *_METHOD_OPTIONS, "dp"],
    "TMIFinetuneConfig", "Fine-tuning options beyond tmi.method / tmi.lrs / tmi.finetune_epochs; finetune.dp.epsilon "
                         "makes the headline itself DP (the sweep's ε come from tmi.epsilons).")
TMITextFinetuneConfig = section_of(
    FinetuneConfig, ["optimizer", "momentum", "weight_decay", *_METHOD_OPTIONS, "dp"], "TMITextFinetuneConfig",
    "Fine-tuning options beyond tmi.method / tmi.lrs / tmi.finetune_epochs / tmi.batch_size (no augmentation).")
TMIPretrainConfig = section_of(
    PretrainConfig, ["optimizer", "lr", "momentum", "weight_decay", "batch_size"], "TMIPretrainConfig",
    "The shadows' pretraining optimiser (epochs and augmentation: tmi.pretrain_epochs, tmi.pretrain_augment).")


class TMIDataConfig(ConfigSection):
    """The digit classes of the two stages (the pool and the downstream data sizes are tmi.* keys)."""

    pretrain_classes: list[int] = Field(default=[0, 1, 2, 3, 4], min_length=2, max_length=10,
                                        description="classes of the pretraining pool (the challenge points)")
    finetune_classes: list[int] = Field(default=[5, 6, 7, 8, 9], min_length=2, max_length=10,
                                        description="classes of the downstream task (a new head)")
    population_size: int = Field(default=400, ge=2, le=DIGITS, description="held-out downstream digits: the test set")

    @model_validator(mode="after")
    def _classes(self) -> "TMIDataConfig":
        check_classes(self.pretrain_classes, self.finetune_classes)
        return self


class TMIModelConfig(ConfigSection):
    """Widths of the shadows' network (which network: tmi.arch)."""

    hidden: list[Width] = Field(default=[128, 64], min_length=1, max_length=MAX_LAYERS, description="mlp: hidden widths")
    channels: list[Width] = Field(default=[32, 64], min_length=1, max_length=MAX_LAYERS, description="cnn: conv channels")


class TMICommon(ConfigSection):
    """What the two TMI studies share (Abascal et al., PETS 2024): membership in the PRETRAINING set,
    inferred from queries to the fine-tuned model with one metaclassifier per challenge point."""

    shadows: int = Field(default=32, ge=4, le=MAX_REFERENCES, description="shadow models (even): each pretrained on a "
                                                                          "random half of the pool, then fine-tuned; "
                                                                          "every one takes a turn as victim")
    pretrain_epochs: int = Field(default=60, ge=1, le=MAX_EPOCHS, description="passes over each shadow's half of the pool")
    method: str = Field(default="head", description="fine-tuning method of the headline")
    finetune_epochs: int = Field(default=20, ge=1, le=MAX_EPOCHS, description="fine-tuning passes over the downstream data")
    lrs: dict[str, LearningRate] = Field(default={"head": 1e-2, "bitfit": 1e-2, "layers": 3e-3, "lora": 3e-3,
                                                  "adapters": 3e-3, "full": 1e-3}, max_length=16,
                                         description="fine-tuning learning rate per method")
    augmentations: int = Field(default=8, ge=1, le=1000, description="queries A per challenge point: the original and "
                                                                     "A - 1 random views")
    victims: int = Field(default=0, ge=0, le=MAX_REFERENCES, description="headline: shadows that take a turn as victim; "
                                                                         "0 = all")
    meta_hidden: int = Field(default=64, ge=1, le=MAX_WIDTH, description="metaclassifier hidden width")
    meta_epochs: int = Field(default=20, ge=1, le=MAX_EPOCHS, description="metaclassifier training epochs")
    balance: bool = Field(default=True, description="train each metaclassifier on equally many IN and OUT shadows "
                                                    "(leave-one-out otherwise biases members low)")
    sweep_victims: int = Field(default=8, ge=1, le=MAX_REFERENCES, description="victims per sweep cell (the first ones)")
    shadow_counts: list[int] = Field(default=[8, 16, 32], max_length=32, description="sweep: shadow models (subsets of "
                                                                                     "the trained ones)")
    methods: list[str] = Field(default=["head", "lora", "full"], max_length=16, description="sweep: fine-tuning methods")
    epsilons: list[float] = Field(default=[1.0, 8.0], max_length=32, description="sweep: target ε of DP fine-tuning with "
                                                                                 "`method` (δ, clip, accountant from "
                                                                                 "finetune.dp); [] = off")
    augmentation_counts: list[int] = Field(default=[1, 2, 4, 8], max_length=32, description="sweep: queries per point "
                                                                                            "(subsets)")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return known_method(value)

    @model_validator(mode="after")
    def _valid(self) -> "TMICommon":
        from ftaudit.finetune.methods import METHODS

        if self.shadows % 2:
            raise field_error(("shadows",), "must be even (a half keep-matrix)", self.shadows)
        for i, name in enumerate(self.methods):
            if name not in METHODS:
                raise field_error(("methods", i), f"unknown fine-tuning method {name!r}; choose from "
                                  f"{', '.join(METHODS)}", name)
        for name in [*self.methods, self.method]:
            if name not in self.lrs:
                raise field_error(("lrs",), f"no learning rate for method {name!r}; add it, e.g. lrs.{name}=0.003", name)
        for i, e in enumerate(self.epsilons):
            if not 0 < e <= MAX_EPSILON:
                raise field_error(("epsilons", i), f"must be positive and finite, at most {MAX_EPSILON:g} (the no-DP "
                                  "cell is the headline)", e)
        for i, count in enumerate(self.shadow_counts):
            if not 2 <= count <= self.shadows:
                raise field_error(("shadow_counts", i), f"must lie in [2, shadows = {self.shadows}]", count)
        for i, a in enumerate(self.augmentation_counts):
            if not 1 <= a <= self.augmentations:
                raise field_error(("augmentation_counts", i), f"must lie in [1, augmentations = {self.augmentations}]", a)
        if self.victims > self.shadows:
            raise field_error(("victims",), f"{self.victims} exceeds shadows ({self.shadows})", self.victims)
        return self


class TMIConfig(TMICommon):
    """Study ``tmi`` on digits: pretrain on data.pretrain_classes, fine-tune a new head on data.finetune_classes."""

    pool: int = Field(default=400, ge=8, le=DIGITS, description="pretraining pool = challenge points (digits of "
                                                                "data.pretrain_classes)")
    mislabel: float = Field(default=0.25, ge=0, lt=1, description="share of the pool given a random wrong label: "
                                                                  "outliers a model can only fit by memorizing them")
    finetune_size: int = Field(default=400, ge=10, le=DIGITS, description="downstream training digits (data.finetune_classes), "
                                                               "the same for every shadow")
    arch: Literal["mlp", "cnn"] = Field(default="mlp", description="network (widths from model.hidden / model.channels)")
    pretrain_augment: int = Field(default=0, ge=0, le=2, description="pretraining pixel-shift augmentation (0 = none)")
    query_shift: int = Field(default=0, ge=0, le=2, description="views: random pixel shift of up to this many pixels")
    query_noise: float = Field(default=0.05, ge=0, le=10, description="views: std of the Gaussian pixel noise (pixels in [0, 1])")


class TMITextConfig(TMICommon):
    """Study ``tmi-text``: a tiny GPT-2 pretrained on blocks of one corpus, fine-tuned on another."""

    shadows: int = Field(default=16, ge=4, le=MAX_REFERENCES, description="shadow LMs (even): each pretrained on a random half of the "
                                                        "block pool, then fine-tuned; every one takes a turn as victim")
    shadow_counts: list[int] = Field(default=[4, 8, 16], max_length=32, description="sweep: shadow models (subsets of the trained ones)")
    pretrain_epochs: int = Field(default=12, ge=1, le=MAX_EPOCHS, description="passes over each shadow's half of the block pool")
    method: str = Field(default="full", description="fine-tuning method of the headline (head = the LM head only)")
    finetune_epochs: int = Field(default=3, ge=1, le=MAX_EPOCHS, description="fine-tuning passes over the downstream blocks")
    lrs: dict[str, LearningRate] = Field(default={"head": 1e-2, "bitfit": 1e-2, "layers": 3e-3, "lora": 3e-3,
                                                  "adapters": 3e-3, "full": 3e-3}, max_length=16,
                                  description="fine-tuning learning rate per method")
    methods: list[str] = Field(default=["head", "full"], max_length=16, description="sweep: fine-tuning methods")
    meta_epochs: int = Field(default=60, ge=1, le=MAX_EPOCHS, description="metaclassifier training epochs (a few shadows' rows need "
                                                           "more than the study's 20)")
    epsilons: list[float] = Field(default=[8.0], max_length=32, description="sweep: target ε of DP fine-tuning with `method` "
                                                              "(δ, clip, accountant from finetune.dp); [] = off")
    pretrain_corpus: str = Field(default="wikitext2", description="corpus whose blocks are the pool (challenge points)")
    finetune_corpus: str = Field(default="shakespeare", description="downstream corpus (the same blocks for every shadow)")
    block_len: int = Field(default=32, ge=4, le=8192, description="tokens per block (the membership unit)")
    pool: int = Field(default=128, ge=8, le=MAX_BLOCKS, description="pretraining blocks = challenge points")
    finetune_blocks: int = Field(default=128, ge=8, le=MAX_BLOCKS, description="downstream blocks")
    vocab_size: int = Field(default=512, ge=261, le=1 << 17, description="byte-level BPE trained on both corpora")
    n_layer: int = Field(default=2, ge=1, le=MAX_LAYERS, description="GPT-2 layers")
    n_embd: int = Field(default=64, ge=8, le=MAX_WIDTH, description="GPT-2 width")
    n_head: int = Field(default=2, ge=1, le=256, description="GPT-2 attention heads (divides n_embd)")
    pretrain_lr: LearningRate = Field(default=1e-2, description="pretraining learning rate (Adam)")
    batch_size: int = Field(default=8, ge=1, le=MAX_BATCH, description="pretraining and fine-tuning mini-batch (blocks)")
    perturb: float = Field(default=0.1, ge=0, lt=1, description="views: share of a block's tokens replaced by random "
                                                                "tokens of the pool")

    @model_validator(mode="after")
    def _heads(self) -> "TMITextConfig":
        if self.n_embd % self.n_head:
            raise field_error(("n_head",), f"{self.n_head} heads do not divide n_embd ({self.n_embd})", self.n_head)
        return self


class TMIStudyConfig(StudyConfig):
    """``tmi``: pretraining membership of digits, through the fine-tuned model."""

    study: Literal["tmi"] = "tmi"
    data: TMIDataConfig = TMIDataConfig()
    model: TMIModelConfig = TMIModelConfig()
    pretrain: TMIPretrainConfig = TMIPretrainConfig()
    finetune: TMIFinetuneConfig = TMIFinetuneConfig()
    tmi: TMIConfig = TMIConfig()


class TMITextStudyConfig(StudyConfig):
    """``tmi-text``: pretraining membership of text blocks, through the fine-tuned tiny GPT-2."""

    study: Literal["tmi-text"] = "tmi-text"
    finetune: TMITextFinetuneConfig = TMITextFinetuneConfig()
    tmi: TMITextConfig = TMITextConfig()
