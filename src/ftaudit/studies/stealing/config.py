"""The stealing study's config: its own section, the fine-tuning method options its victims and
students read, and the run config composed of them (``StealingStudyConfig``)."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, PositiveFloat, field_validator, model_validator

from ftaudit.config import ConfigSection, MethodOptionsConfig, StudyConfig, increasing_counts, known_method

CANDIDATE = re.compile(r"^(\d+)x(\d+):([A-Za-z0-9_.-]+):(\d+)$")


class StealingConfig(ConfigSection):
    """Scenario ``stealing``: identify a black-box classifier's public base (latency, outputs),
    estimate its weights from that base by distillation, and extract only what fine-tuning changed."""

    vocab_size: int = Field(default=1024, ge=261, description="byte-level BPE trained on the candidates', task and "
                                                              "query corpora")
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
                                      description="fine-tuning methods of the victims (the finetune.* method options "
                                                  "apply)")
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

    @field_validator("budgets")
    @classmethod
    def _student_budgets(cls, values: list[int]) -> list[int]:
        if min(values) < 4:
            raise ValueError("a student needs at least 4 queries: use budgets of 4 or more")
        return values

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


class StealingStudyConfig(StudyConfig):
    """``ftaudit run stealing``: the stealing section and the fine-tuning method options."""

    study: Literal["stealing"] = "stealing"
    stealing: StealingConfig = StealingConfig()
    # the knobs of the victims' methods (stealing.victim_methods) and the head-only student; epochs,
    # learning rates and batch size are in ``stealing``
    finetune: MethodOptionsConfig = MethodOptionsConfig()
