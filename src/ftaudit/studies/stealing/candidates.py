"""The stealing study's world: the tokenizer, the candidate bases (pretrained by the engine, stored
as HF directories and loaded back), the victims' task and the attacker's queries.

Every input of the study starts with [CLS], as BERT's do, in pretraining, fine-tuning and every
query alike (with ``stealing.pooling=cls`` the classifiers' pooler reads that position).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ftaudit.config import OptimConfig
from ftaudit.data.text import Corpus, load_corpus, make_blocks
from ftaudit.data.tokenizer import MASK_ID, train_tokenizer
from ftaudit.errors import UserError
from ftaudit.finetune.groups import method_group
from ftaudit.finetune.methods import get_method
from ftaudit.models.lm import LMWrapper, initial_state, lm_arch_spec, load_pretrained, tiny_bert
from ftaudit.models.lm import _quiet_hf as quiet_hf
from ftaudit.seeding import derive_seed
from ftaudit.store.cache import content_key
from ftaudit.studies.base import Context
from ftaudit.studies.lm.base import blocks_of
from ftaudit.studies.stealing.config import CANDIDATE, StealingConfig, StealingStudyConfig
from ftaudit.train.mlm import masked_lm_objective
from ftaudit.train.objectives import IGNORE


@dataclass(frozen=True)
class Candidate:
    name: str
    n_layer: int
    n_embd: int
    corpus: str
    seed: int

    @property
    def arch(self) -> str:
        return f"{self.n_layer}x{self.n_embd}"

    @classmethod
    def parse(cls, spec: str) -> "Candidate":
        layers, width, corpus, seed = CANDIDATE.match(spec).groups()
        return cls(spec, int(layers), int(width), corpus, int(seed))


@dataclass
class Labelled:
    """Token blocks with class targets (labels [n] or teacher probabilities [n, K]): a training pool."""

    x: np.ndarray
    y: np.ndarray

    def digest(self) -> str:
        return content_key(x=self.x, y=self.y)


@dataclass
class Base:
    """A candidate as the attacker holds it: the loaded HF model and its weights."""

    candidate: Candidate
    model: LMWrapper
    state: dict


def recipe(st: StealingConfig, lr: float, epochs: int) -> OptimConfig:
    """Every training here: Adam, ``stealing.batch_size``."""
    return OptimConfig(optimizer="adam", lr=lr, epochs=epochs, batch_size=st.batch_size)


def with_cls(ids: np.ndarray, cls_id: int) -> np.ndarray:
    return np.concatenate([np.full((len(ids), 1), cls_id, dtype=np.int64), ids.astype(np.int64)], axis=1)


def tokenizer(ctx: Context, st: StealingConfig):
    """One byte-level BPE on every corpus the study reads (cached under the store). Each corpus is
    loaded, and the task checked against it, before the tokenizer is trained and cached, so a bad
    key leaves the store as it was."""
    fields = {Candidate.parse(c).corpus: "stealing.candidates" for c in st.candidates}
    fields.update({st.query_corpus: "stealing.query_corpus", st.task_corpus: "stealing.task_corpus"})
    loaded = {name: load_corpus(name, field=field) for name, field in fields.items()}
    task_docs = sorted(loaded[st.task_corpus].documents, key=len, reverse=True)
    if len(task_docs) < st.classes:
        raise UserError("stealing.classes", f"{st.task_corpus} has {len(task_docs)} articles", "ask for fewer classes")
    need = (st.train_per_class + st.test_per_class) * (st.block_len - 1)  # tokens; a byte-level token is >= 1 byte
    if len(task_docs[st.classes - 1].encode()) < need:
        raise UserError("stealing.train_per_class", f"article {st.classes - 1} of {st.task_corpus} has "
                        f"{len(task_docs[st.classes - 1].encode())} bytes, fewer than the {need} tokens asked for",
                        "ask for fewer blocks per class, fewer classes or a shorter stealing.block_len")
    docs = [d for name in sorted(loaded) for d in loaded[name].documents]
    return train_tokenizer(docs, st.vocab_size, cache_dir=Path(ctx.store.root) / "cache" / "tokenizers")


def candidate_bases(ctx: Context, cfg: StealingStudyConfig, tok) -> dict[str, Base]:
    """Every candidate pretrained (cached), written as an HF directory and loaded back from it."""
    st = cfg.stealing
    out = {}
    for spec in st.candidates:
        c = Candidate.parse(spec)
        if c.n_embd % 2:
            raise UserError("stealing.candidates", f"{spec}: width must be even (2 attention heads)", "use e.g. 2x64")
        model = tiny_bert(len(tok), st.block_len, n_layer=c.n_layer, n_embd=c.n_embd, n_head=2,
                          seed=derive_seed(c.seed, "candidate-init", c.arch, c.corpus))
        blocks = blocks_of(c.corpus, "stealing.candidates", "stealing.pretrain_blocks", tok, st.block_len - 1,
                           st.pretrain_blocks, derive_seed(c.seed, "candidate-blocks", c.corpus))
        x = with_cls(blocks.x, tok.cls_token_id)
        targets = np.where(np.arange(x.shape[1]) == 0, IGNORE, x)  # [CLS] is never masked nor predicted
        group = method_group(f"pretrain candidate {spec}", model, lm_arch_spec(model), get_method("full"),
                             recipe(st, st.pretrain_lr, st.pretrain_epochs), Labelled(x, targets), [initial_state(model)],
                             [np.arange(len(x))], [derive_seed(c.seed, "candidate-pretrain")], run_seed=cfg.seed,
                             objective=masked_lm_objective(MASK_ID))
        trained = ctx.train(group, vectorized=False)
        where = Path(ctx.store.root) / "cache" / "candidates" / trained.keys[0]
        if not (where / "config.json").exists():
            group.template.load_state_dict(trained.states()[0])
            with quiet_hf():
                group.template.lm.save_pretrained(where)
                tok.save_pretrained(where)
        base = load_pretrained(where, kind="masked-lm", field="stealing.candidates")
        out[spec] = Base(c, base, initial_state(base))
    return out


def task_data(st: StealingConfig, tok, seed: int) -> tuple[Labelled, Labelled]:
    """(train, test): blocks of the ``classes`` longest articles of ``task_corpus``, labelled by article."""
    docs = sorted(load_corpus(st.task_corpus, field="stealing.task_corpus").documents, key=len, reverse=True)
    if len(docs) < st.classes:
        raise UserError("stealing.classes", f"{st.task_corpus} has {len(docs)} articles", "ask for fewer classes")
    n = st.train_per_class + st.test_per_class
    try:
        parts = [make_blocks(Corpus.from_text(d, f"article {k}"), tok, st.block_len - 1, n, derive_seed(seed, "task", k))
                 for k, d in enumerate(docs[:st.classes])]
    except UserError as exc:
        raise UserError("stealing.train_per_class", exc.problem, "ask for fewer blocks per class, fewer classes or a "
                        "shorter stealing.block_len") from None

    def split(lo: int, hi: int) -> Labelled:
        return Labelled(with_cls(np.concatenate([p.ids[lo:hi] for p in parts]), tok.cls_token_id),
                        np.repeat(np.arange(st.classes), hi - lo))

    return split(0, st.train_per_class), split(st.train_per_class, n)


def query_pool(st: StealingConfig, tok, n: int, seed: int) -> np.ndarray:
    """``n`` attacker queries, [CLS] first: blocks of public text, or uniformly random non-special tokens."""
    if st.queries == "random":
        rng = np.random.default_rng([seed, 0x0E1])
        body = rng.integers(5, len(tok), size=(n, st.block_len - 1))
    else:
        body = blocks_of(st.query_corpus, "stealing.query_corpus", "stealing.budgets", tok, st.block_len - 1, n, seed).ids
    return with_cls(body, tok.cls_token_id)
