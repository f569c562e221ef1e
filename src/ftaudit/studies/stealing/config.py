"""The stealing study's config: its own section, the fine-tuning method options its victims and
students read, and the run config composed of them (``StealingStudyConfig``)."""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ftaudit.config import (MAX_BATCH, MAX_BLOCKS, MAX_EPOCHS, MAX_LAYERS, MAX_WIDTH, ConfigSection, LearningRate,
                            MethodOptionsConfig, StudyConfig, field_error, increasing_counts, known_method)

Count = Annotated[int, Field(le=10**6)]

CANDIDATE = re.compile(r"^(\d+)x(\d+):([A-Za-z0-9_.-]+):(\d+)$")


class StealingConfig(ConfigSection):
    """Scenario ``stealing``: identify a black-box classifier's public base (latency, outputs),
    estimate its weights from that base by distillation, and extract only what fine-tuning changed."""

    vocab_size: int = Field(default=1024, ge=261, le=1 << 17, description="byte-level BPE trained on the candidates', task and "
                                                              "query corpora")
    candidates: list[str] = Field(
        default=["2x64:wikitext2:0", "2x64:wikitext2:1", "2x64:shakespeare:0", "4x64:wikitext2:0", "2x128:wikitext2:0"],
        min_length=2, max_length=64, description="public tiny BERT bases, 'LAYERSxWIDTH:CORPUS:SEED' (pretrained here, stored as HF "
                                  "directories); the victims are fine-tuned from each")
    block_len: int = Field(default=64, ge=8, le=8192, description="tokens per input, a leading [CLS] included (every block, "
                                                          "query and task example of this scenario)")
    pretrain_blocks: int = Field(default=1536, ge=8, le=MAX_BLOCKS, description="MLM pretraining blocks per candidate")
    pretrain_epochs: int = Field(default=12, ge=1, le=MAX_EPOCHS, description="MLM pretraining passes per candidate")
    pretrain_lr: LearningRate = Field(default=3e-3, description="MLM pretraining learning rate")
    task_corpus: str = Field(default="wikitext2-test", description="the victims' task: which of the `classes` longest "
                                                                   "articles of this corpus a block comes from")
    classes: int = Field(default=4, ge=2, le=1000, description="task classes (articles)")
    train_per_class: int = Field(default=96, ge=4, le=MAX_BLOCKS, description="victim training blocks per class")
    test_per_class: int = Field(default=48, ge=2, le=MAX_BLOCKS, description="held-out blocks per class: agreement and "
                                                                             "accuracy")
    victim_methods: list[str] = Field(default=["full", "lora", "head"], min_length=1, max_length=16,
                                      description="fine-tuning methods of the victims (the finetune.* method options "
                                                  "apply)")
    victim_seeds: int = Field(default=2, ge=1, le=1000, description="victims per (candidate, method): head init and data order")
    pooling: Literal["mean", "cls"] = Field(default="mean", description="what the classifiers' pooler reads: the mean "
                                            "of the last hidden states, or the [CLS] position (HF's BERT; MLM-only tiny "
                                            "bases carry little there)")
    victim_epochs: int = Field(default=12, ge=1, le=MAX_EPOCHS, description="victim fine-tuning passes")
    victim_lrs: dict[str, LearningRate] = Field(default={"full": 3e-4, "lora": 1e-3, "head": 1e-2}, max_length=16,
                                         description="victim fine-tuning learning rate per method (one for each of "
                                                     "victim_methods)")
    top1: bool = Field(default=False, description="the API returns only the top-1 label (else probabilities)")
    queries: Literal["natural", "random"] = Field(default="natural", description="attacker's queries: blocks of "
                                                  "query_corpus, or uniformly random tokens")
    query_corpus: str = Field(default="wikitext2", description="public text the attacker queries with")
    id_budgets: list[Count] = Field(default=[8, 32, 128], min_length=1, max_length=32, description="queries for base identification "
                                                                                 "from outputs")
    latency_lengths: list[int] = Field(default=[8, 32], min_length=1, max_length=32, description="latency profile: "
                                                                                                "input lengths")
    latency_batches: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default=[1, 16], min_length=1, max_length=32,
                                                                        description="latency profile: batch sizes")
    latency_repeats: int = Field(default=5, ge=1, le=1000, description="latency profile: timed calls per cell (median)")
    distill_victims: int = Field(default=1, ge=1, le=1000, description="victims per method whose weights are estimated "
                                                             "(those of the first candidate)")
    budgets: list[Count] = Field(default=[64, 256, 1024], min_length=1, max_length=32,
                                 description="distillation: queries answered")
    distill_steps: int = Field(default=200, ge=1, le=10**6, description="distillation: optimiser steps (epochs = steps × batch / "
                                                              "queries, at least 1)")
    distill_lr: LearningRate = Field(default=1e-3, description="distillation learning rate")
    batch_size: int = Field(default=16, ge=1, le=MAX_BATCH, description="batch size of every training here")
    prune_fractions: list[float] = Field(default=[0.0, 0.01, 0.05, 0.2, 1.0], min_length=1, max_length=32,
                                         description="pruning: share of encoder elements trained (0 = head only, "
                                                     "1 = all), at the largest budget")
    prune_score: Literal["snr", "fisher"] = Field(default="snr", description="pruning: how encoder elements are ranked "
                                                  "at the head-distilled point: snr = |Σ gradient| / √Σ gradient² over "
                                                  "query batches (what Adam's steps follow), fisher = Σ gradient²")

    @field_validator("budgets")
    @classmethod
    def _student_budgets(cls, values: list[int]) -> list[int]:
        if min(values) < 4:
            raise ValueError("a student needs at least 4 queries: use budgets of 4 or more")
        increasing_counts("budgets", values)
        return values

    @field_validator("candidates")
    @classmethod
    def _candidates(cls, values: list[str]) -> list[str]:
        for c in values:
            match = CANDIDATE.match(c)
            if not match:
                raise ValueError(f"candidate {c!r} is not 'LAYERSxWIDTH:CORPUS:SEED' (e.g. '2x64:wikitext2:0')")
            layers, width = int(match.group(1)), int(match.group(2))
            if not 1 <= layers <= MAX_LAYERS or not 2 <= width <= MAX_WIDTH or width % 2:
                raise ValueError(f"candidate {c!r}: 1-{MAX_LAYERS} layers of an even width 2-{MAX_WIDTH} (2 attention "
                                 "heads), e.g. 2x64")
            if int(match.group(4)) > 2**63 - 1:
                raise ValueError(f"candidate {c!r}: its seed exceeds 2**63 - 1")
        if len(set(values)) != len(values):
            raise ValueError("candidates must not repeat")
        return values

    @field_validator("victim_methods")
    @classmethod
    def _methods(cls, values: list[str]) -> list[str]:
        return [known_method(m) for m in values]

    @field_validator("id_budgets")
    @classmethod
    def _id_budgets(cls, values: list[int]) -> list[int]:
        increasing_counts("id_budgets", values)
        if min(values) < 4:
            raise ValueError("id_budgets must be at least 4 (the probe is cross-fitted on two halves)")
        return values

    @field_validator("prune_fractions")
    @classmethod
    def _fractions(cls, values: list[float]) -> list[float]:
        if any(not 0.0 <= p <= 1.0 for p in values):
            raise ValueError("prune_fractions must lie in [0, 1]")
        return values

    @model_validator(mode="after")
    def _valid(self) -> "StealingConfig":
        missing = [m for m in self.victim_methods if m not in self.victim_lrs]
        if missing:
            raise field_error(("victim_lrs",), f"no learning rate for {', '.join(missing)} (give one per victim method)",
                              self.victim_lrs)
        if max(self.latency_lengths) > self.block_len or min(self.latency_lengths) < 1:
            raise field_error(("latency_lengths",), f"must lie in [1, block_len = {self.block_len}] (the models' "
                              "positions)", self.latency_lengths)
        return self


class StealingStudyConfig(StudyConfig):
    """``ftaudit run stealing``: the stealing section and the fine-tuning method options."""

    study: Literal["stealing"] = "stealing"
    stealing: StealingConfig = StealingConfig()
    # the knobs of the victims' methods (stealing.victim_methods) and the head-only student; epochs,
    # learning rates and batch size are in ``stealing``
    finetune: MethodOptionsConfig = MethodOptionsConfig()
