"""The configs of the language-model studies (``lm-mia``, ``mlm-ratio``, ``lm-methods``, ``lm-extraction``).

Each study's config holds only what it reads, with its own defaults:

* ``lm`` — text, tokenizer, the tiny model and how it is pretrained (:class:`LMTextConfig`); the
  membership studies add the audit pool and the second reference (:class:`LMAuditConfig`), the
  masked one the maskings of its MLM loss (:class:`MaskedLMConfig`);
* ``finetune`` — the fine-tuning method, its options and the recipe (:class:`LMFinetuneConfig`), with
  ``references`` for the studies that train an ensemble; text needs other epochs and batch sizes
  than digits, so these are the LM studies' own defaults (1 epoch causal, 4 masked, 6 extraction);
* ``attack`` — the LM attacks of the model's kind, by default all of them;
* ``sweep`` (lm-methods) and ``extraction`` (lm-extraction) — the study's own knobs.
"""
from __future__ import annotations

from typing import Literal

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from ftaudit.attacks.registry import ATTACKS, register_precomputed
from ftaudit.config import (MAX_BATCH, MAX_BLOCKS, MAX_EPOCHS, MAX_LAYERS, MAX_LR, MAX_REFERENCES, MAX_WIDTH, ConfigSection,
                            LearningRate, MethodConfig, OptimConfig, StudyConfig, check_attacks, field_error,
                            increasing_counts, known_method)
from ftaudit.config_input import closest
from ftaudit.finetune.methods import MethodOptions

MAX_VOCAB = 1 << 17     # tokens of a trained BPE
MAX_BLOCK_LEN = 8192    # tokens per block

CAUSAL_TINY, MASKED_TINY = "tiny-gpt2", "tiny-bert"

REF_RATIO, MLM_REF_RATIO = "ref-ratio", "mlm-ref-ratio"
for _name, _text in {REF_RATIO: "LM: NLL drop from the named reference model (lm.reference) to the target",
                     MLM_REF_RATIO: "masked LM: PLL gain of the target over the named reference MLM (lm.reference)"}.items():
    if _name not in ATTACKS:
        register_precomputed(_name, _text)

SEQUENCE_ATTACKS = ["lira-online", "lira-online-global", "lira-offline", "lira-offline-global", "rmia-online", "rmia-offline"]
CAUSAL_ATTACKS = ["loss", "zlib", "min-k", "min-k++", "lm-ratio", REF_RATIO, *SEQUENCE_ATTACKS]
MASKED_ATTACKS = ["loss", "reference", "mlm-pll", "mlm-ratio", MLM_REF_RATIO, *SEQUENCE_ATTACKS]


# ------------------------------------------------------------------------------------------ lm


class LMTextConfig(ConfigSection):
    """Text, tokenizer, the tiny model and its pretraining (section ``lm`` of every LM study)."""

    model: str = Field(default="tiny", description="tiny: the study's own tiny model (GPT-2, or BERT for mlm-ratio), "
                                                   "pretrained here on pretrain_corpus; tiny-gpt2 / tiny-bert name one; "
                                                   "anything else is a local save_pretrained directory or a hub id (used "
                                                   "as the pretrained base with its own tokenizer, no pretraining)")
    pretrain_corpus: str = Field(default="wikitext2", description="public text the tiny base is pretrained on (bundled "
                                                                  "name, .txt/.jsonl/.csv file, or HF dataset)")
    finetune_corpus: str = Field(default="wikitext2-test", description="private text the models are fine-tuned on "
                                                                       "(shakespeare: a domain shift from the base)")
    vocab_size: int = Field(default=1024, ge=261, le=MAX_VOCAB, description="byte-level BPE trained on both corpora "
                                                                           "(tiny models)")
    block_len: int = Field(default=32, ge=4, le=MAX_BLOCK_LEN, description="tokens per block, the unit of training text")
    pretrain_blocks: int = Field(default=0, ge=0, le=MAX_BLOCKS, description="blocks of pretrain_corpus the tiny base "
                                                                             "trains on (0 = all)")
    n_layer: int = Field(default=2, ge=1, le=MAX_LAYERS, description="tiny model: transformer layers")
    n_embd: int = Field(default=64, ge=8, le=MAX_WIDTH, description="tiny model: width")
    n_head: int = Field(default=2, ge=1, le=256, description="tiny model: attention heads (divides n_embd)")
    pretrain_epochs: int = Field(default=3, ge=1, le=MAX_EPOCHS, description="tiny base: passes over the pretraining "
                                                                             "blocks (Adam)")
    pretrain_lr: float = Field(default=3e-3, gt=0, le=MAX_LR, description="tiny base: learning rate")
    pretrain_batch_size: int = Field(default=16, ge=1, le=MAX_BATCH, description="tiny base: blocks per pretraining step")

    @property
    def tiny(self) -> bool:
        """The base is pretrained here (not loaded)."""
        return self.model in ("tiny", CAUSAL_TINY, MASKED_TINY)

    @property
    def pretrain_optim(self) -> OptimConfig:
        return OptimConfig(optimizer="adam", lr=self.pretrain_lr, epochs=self.pretrain_epochs,
                           batch_size=self.pretrain_batch_size, augment=0)

    @model_validator(mode="after")
    def _valid(self) -> "LMTextConfig":
        if self.n_embd % self.n_head:
            raise field_error(("n_head",), f"{self.n_head} heads do not divide n_embd ({self.n_embd})", self.n_head)
        if self.tiny and self.pretrain_corpus == self.finetune_corpus:
            raise field_error(("pretrain_corpus",), "is the fine-tuning corpus: the base would be pretrained on the "
                              "private text; pretrain on other text, e.g. wikitext2 for wikitext2-test",
                              self.pretrain_corpus)
        return self


class LMAuditConfig(LMTextConfig):
    """``lm`` of the membership studies: the audit pool under the keep-matrix and the second reference."""

    n_blocks: int = Field(default=256, ge=4, le=MAX_BLOCKS, description="audit pool: blocks of finetune_corpus under the keep-matrix "
                                                         "(each model trains on half)")
    population: int = Field(default=128, ge=2, le=MAX_BLOCKS, description="held-out blocks of finetune_corpus: validation perplexity and "
                                                           "the RMIA population")
    reference: str = Field(default="disjoint", description="reference model of the ratio attacks besides the base (always "
                                                           "used): disjoint = one fine-tuned from the base on other "
                                                           "blocks of finetune_corpus; base = the base only; or a local "
                                                           "directory / hub id of a model with the same tokenizer")


class MaskedLMConfig(LMAuditConfig):
    """``lm`` of mlm-ratio."""

    maskings: int = Field(default=8, ge=1, le=1000, description="random 15 % maskings averaged in the MLM-loss signal")


# ------------------------------------------------------------------------------------ finetune


class LMFinetuneConfig(MethodConfig):
    """Fine-tuning an LM from the base: what trains (method and its options; ``head`` = the LM head)
    and the recipe."""

    optimizer: Literal["sgd", "adam"] = Field(default="adam", description="adam or sgd (torch.optim)")
    lr: float = Field(default=1e-3, gt=0, le=MAX_LR, description="learning rate")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="sgd momentum")
    weight_decay: float = Field(default=0.0, ge=0, le=10, description="L2 weight decay")
    epochs: int = Field(default=1, ge=1, le=MAX_EPOCHS, description="passes over each model's fine-tuning blocks")
    batch_size: int = Field(default=16, ge=1, le=MAX_BATCH, description="blocks per step")

    @property
    def optim(self) -> OptimConfig:
        """The recipe as the engine keys and runs it (no pixel-shift augmentation for text)."""
        return OptimConfig(optimizer=self.optimizer, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                           epochs=self.epochs, batch_size=self.batch_size, augment=0)

    @property
    def options(self) -> MethodOptions:
        return MethodOptions.from_config(self)


class EnsembleFinetuneConfig(LMFinetuneConfig):
    """``finetune`` of lm-mia: an ensemble of fine-tunes under a keep-matrix."""

    references: int = Field(default=16, ge=2, le=MAX_REFERENCES, description="reference models per target (LiRA/RMIA); "
                                                          "references + 1 models are trained, rounded up to even")

    @property
    def n_models(self) -> int:
        m = self.references + 1
        return m + (m % 2)


class MaskedFinetuneConfig(EnsembleFinetuneConfig):
    """``finetune`` of mlm-ratio."""

    epochs: int = Field(default=4, ge=1, le=MAX_EPOCHS, description="passes over each model's half of the audit pool (only 15 % of "
                                                     "the tokens carry a loss, so masked LMs need more than causal ones)")


class MethodsFinetuneConfig(EnsembleFinetuneConfig):
    """``finetune`` of lm-methods: the recipe of every cell; method and lr name the headline cell."""

    method: str = Field(default="full", description="the headline cell's method (the attack table, ROC and exposed "
                                                    "blocks); the grid is sweep.methods")
    lr: float = Field(default=1e-3, gt=0, le=MAX_LR, description="the headline cell's learning rate; the grid is sweep.lrs")
    references: int = Field(default=7, ge=2, le=MAX_REFERENCES, description="reference models per target in every cell")


class ExtractionFinetuneConfig(LMFinetuneConfig):
    """``finetune`` of lm-extraction: one model, fine-tuned on the blocks with the canaries."""

    epochs: int = Field(default=6, ge=1, le=MAX_EPOCHS, description="passes over the fine-tuning blocks")


# -------------------------------------------------------------------------------------- attacks


class LMAttackConfig(ConfigSection):
    """The attacks of the headline: every causal-LM attack by default."""

    names: list[str] = Field(default=CAUSAL_ATTACKS, min_length=1, max_length=64, description="attacks to run")
    params: dict[str, dict[str, float]] = Field(default_factory=dict, max_length=64,
                                                description="per-attack parameters, e.g. rmia-online: {gamma: 2}")
    targets: int = Field(default=0, ge=0, le=MAX_REFERENCES + 2, description="models that take a turn as target; 0 = all")

    @model_validator(mode="after")
    def _known(self) -> "LMAttackConfig":
        check_attacks(self.names, self.params)
        return self


class MaskedAttackConfig(LMAttackConfig):
    names: list[str] = Field(default=MASKED_ATTACKS, min_length=1, max_length=64, description="attacks to run")


# ------------------------------------------------------------------------------ study sections


class LMSweepConfig(ConfigSection):
    """lm-methods: the grid of cells (one ensemble each) and the canaries every model trains on."""

    methods: list[str] = Field(default=["full", "head", "adapters", "lora"], min_length=1, max_length=16,
                               description="fine-tuning methods compared")
    lrs: list[LearningRate] = Field(default=[1e-3, 3e-3, 1e-2], min_length=1, max_length=16,
                                    description="learning rates per method")
    attack: str = Field(default="lm-ratio", description="the attack whose recall at 10 % / 1 % FPR measures each cell's "
                                                        "leakage")
    canaries: int = Field(default=8, ge=0, le=10_000, description="canaries ('the secret number is' + 6 random digits) every model "
                                                       "also trains on, for the exposure column; 0 = none")
    canary_repeats: int = Field(default=4, ge=1, le=1000, description="copies of each canary in the fine-tuning data")
    canary_references: int = Field(default=500, ge=3, le=10**6, description="never-inserted secrets each canary's exposure is "
                                                                  "measured against (rank exposure ≤ log2 of this + 1; "
                                                                  "the skew-normal estimate goes beyond)")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, values: list[str]) -> list[str]:
        return [known_method(v) for v in values]

    @field_validator("attack")
    @classmethod
    def _known_attack(cls, value: str) -> str:
        if value not in ATTACKS:
            match = closest(value, ATTACKS)
            hint = f"did you mean {match!r}? " if match else ""
            raise ValueError(f"unknown attack {value!r}; {hint}use lm-ratio (the study's), loss, min-k++, "
                             "lira-online-global, …")
        return value


class ExtractionConfig(ConfigSection):
    """lm-extraction: canary exposure (Carlini et al. 2019) and extraction by generation (Carlini et al. 2021)."""

    repetitions: list[Annotated[int, Field(le=10_000)]] = Field(default=[1, 2, 4, 8, 16], min_length=1, max_length=32,
                                   description="times a canary is inserted into the fine-tuning blocks; each count "
                                               "has its own canaries, all in one fine-tuning run")
    canaries: int = Field(default=8, ge=2, le=10_000, description="canaries per repetition count (the CI of mean exposure is over them)")
    references: int = Field(default=5000, ge=5000, le=10**6, description="reference canaries: secrets of the same format never "
                                                               "inserted, the set exposure ranks against")
    canary_prefix: str = Field(default="the secret number is", min_length=1, max_length=1000,
                               description="the canary's fixed text; one space and the secret follow it")
    canary_digits: int = Field(default=6, ge=4, le=12, description="random decimal digits of each secret")
    finetune_blocks: int = Field(default=1024, ge=8, le=MAX_BLOCKS, description="fine-tuning blocks of lm.finetune_corpus; each insertion "
                                                                "of a canary overwrites the start of its own block")
    prompts: int = Field(default=16, ge=2, le=10_000, description="extraction: fine-tuning blocks per repetition count whose prefixes "
                                                       "prompt the model, each in the data r times (copies) and none with a "
                                                       "canary; as many held-out blocks in all are the control")
    prefix_len: int = Field(default=16, ge=1, le=MAX_BLOCK_LEN, description="extraction: prompt tokens (the start of a block)")
    suffix_len: int = Field(default=8, ge=1, le=MAX_BLOCK_LEN, description="extraction: tokens sampled, matched verbatim against the block's "
                                                          "next tokens (prefix_len + suffix_len <= lm.block_len)")
    samples: int = Field(default=8, ge=1, le=1000, description="extraction: continuations sampled per prompt")
    top_k: int = Field(default=40, ge=0, le=MAX_VOCAB, description="extraction: sample among the k most likely tokens (0 = all)")
    temperature: float = Field(default=1.0, gt=0, le=100, description="extraction: sampling temperature")
    budgets: list[Annotated[float, Field(gt=0, le=10_000)]] = Field(default=[0.25, 1.0], min_length=1, max_length=32,
                                 description="extraction: candidates kept per prompt on average (the top-ranked overall)")

    @field_validator("repetitions")
    @classmethod
    def _increasing(cls, values: list[int]) -> list[int]:
        increasing_counts("repetitions", values)
        return values

    @model_validator(mode="after")
    def _valid(self) -> "ExtractionConfig":
        needed = (self.canaries * sum(self.repetitions) + self.prompts * len(self.repetitions))
        if needed > self.finetune_blocks:
            raise field_error(("finetune_blocks",), f"{self.canaries} canaries × {sum(self.repetitions)} insertions + "
                              f"{self.prompts} × {len(self.repetitions)} prompt blocks need {needed} distinct "
                              f"fine-tuning blocks, finetune_blocks is {self.finetune_blocks}", self.finetune_blocks)
        if 10 ** self.canary_digits < self.references + self.canaries * len(self.repetitions):
            raise field_error(("canary_digits",), f"{self.canary_digits} digits give too few distinct secrets for the "
                              f"canaries and references", self.canary_digits)
        return self


# --------------------------------------------------------------------------------- study configs


class LMMIAConfig(StudyConfig):
    study: Literal["lm-mia"] = "lm-mia"
    lm: LMAuditConfig = LMAuditConfig()
    finetune: EnsembleFinetuneConfig = EnsembleFinetuneConfig()
    attack: LMAttackConfig = LMAttackConfig()


class MLMRatioConfig(StudyConfig):
    study: Literal["mlm-ratio"] = "mlm-ratio"
    lm: MaskedLMConfig = MaskedLMConfig()
    finetune: MaskedFinetuneConfig = MaskedFinetuneConfig()
    attack: MaskedAttackConfig = MaskedAttackConfig()


class LMMethodsConfig(StudyConfig):
    study: Literal["lm-methods"] = "lm-methods"
    lm: LMAuditConfig = LMAuditConfig()
    finetune: MethodsFinetuneConfig = MethodsFinetuneConfig()
    sweep: LMSweepConfig = LMSweepConfig()
    attack: LMAttackConfig = LMAttackConfig()


class LMExtractionConfig(StudyConfig):
    study: Literal["lm-extraction"] = "lm-extraction"
    lm: LMTextConfig = LMTextConfig()
    finetune: ExtractionFinetuneConfig = ExtractionFinetuneConfig()
    extraction: ExtractionConfig = ExtractionConfig()

    @model_validator(mode="after")
    def _fits_a_block(self) -> "LMExtractionConfig":
        ex = self.extraction
        if ex.prefix_len + ex.suffix_len > self.lm.block_len:
            raise field_error(("extraction", "suffix_len"), f"prefix {ex.prefix_len} + suffix {ex.suffix_len} tokens "
                              f"exceed lm.block_len ({self.lm.block_len}); shorten them or lengthen the blocks",
                              ex.suffix_len)
        return self
