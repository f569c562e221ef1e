"""The bundled vision task: scikit-learn's digits (1,797 8×8 images, shipped with sklearn, no download).

Two ways to make a public pretraining task and a private fine-tuning task:

* ``half`` (default): a public labelled part of all ten classes pretrains the base; the private rest is
  the fine-tuning task, same classes and same head. Transfer is real (from scratch on the private part
  alone generalises worse) and the base is a meaningful free reference for membership.
* ``classes``: pretrain on some digits, fine-tune a fresh head on the others.

The fine-tuning images are split into the private audit pool (under the keep-matrix) and a held-out
population (test set and the attacks' population data).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ftaudit.config import DataConfig
from ftaudit.errors import UserError


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32 [n, 1, 8, 8], scaled to [0, 1]
    y: np.ndarray  # int64 [n], relabelled 0..k-1 within the task
    source_index: np.ndarray  # int64 [n], row in sklearn's digits

    def __len__(self) -> int:
        return len(self.y)

    def digest(self) -> str:
        h = hashlib.sha256()
        for arr in (self.x, self.y):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class DigitsTask:
    pretrain: Split
    pretrain_test: Split
    audit: Split
    population: Split
    pretrain_classes: tuple[int, ...]
    finetune_classes: tuple[int, ...]

    @property
    def new_head(self) -> bool:
        """Fine-tuning needs a fresh head when its classes differ from pretraining's."""
        return self.pretrain_classes != self.finetune_classes

    @property
    def n_pretrain_classes(self) -> int:
        return len(self.pretrain_classes)

    @property
    def n_finetune_classes(self) -> int:
        return len(self.finetune_classes)


def _subset(x: np.ndarray, y: np.ndarray, rows: np.ndarray, classes: tuple[int, ...]) -> Split:
    relabel = {c: i for i, c in enumerate(classes)}
    return Split(x=x[rows], y=np.array([relabel[int(c)] for c in y[rows]], dtype=np.int64), source_index=rows.astype(np.int64))


def load_digits_task(cfg: DataConfig, seed: int) -> DigitsTask:
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = (raw.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = raw.target.astype(np.int64)
    rng = np.random.default_rng([seed, 0xD161])
    need = cfg.audit_size + cfg.population_size
    if cfg.split == "half":
        classes = tuple(range(10))
        rows = rng.permutation(len(y))
        if cfg.pretrain_size + need > len(rows):
            raise UserError("data.pretrain_size", f"pretrain_size + audit_size + population_size = {cfg.pretrain_size + need} "
                            f"but digits has {len(rows)} images", f"lower them so they sum to at most {len(rows)}")
        pre, ft = rows[: cfg.pretrain_size], rows[cfg.pretrain_size:]
        audit, population = _subset(x, y, ft[: cfg.audit_size], classes), _subset(x, y, ft[cfg.audit_size:need], classes)
        # Same task: the base is tested on the fine-tuning task's held-out population.
        return DigitsTask(pretrain=_subset(x, y, pre, classes), pretrain_test=population, audit=audit,
                          population=population, pretrain_classes=classes, finetune_classes=classes)
    pre_cls, ft_cls = tuple(cfg.pretrain_classes), tuple(cfg.finetune_classes)
    pre_rows = rng.permutation(np.flatnonzero(np.isin(y, pre_cls)))
    ft_rows = rng.permutation(np.flatnonzero(np.isin(y, ft_cls)))
    if need > len(ft_rows):
        raise UserError("data.audit_size", f"audit_size + population_size = {need} but the fine-tuning classes "
                        f"{list(ft_cls)} have only {len(ft_rows)} images",
                        f"lower them so they sum to at most {len(ft_rows)}")
    n_pre_test = len(pre_rows) // 5  # the base's accuracy is measured on a held-out fifth
    return DigitsTask(
        pretrain=_subset(x, y, pre_rows[n_pre_test:], pre_cls),
        pretrain_test=_subset(x, y, pre_rows[:n_pre_test], pre_cls),
        audit=_subset(x, y, ft_rows[: cfg.audit_size], ft_cls),
        population=_subset(x, y, ft_rows[cfg.audit_size:need], ft_cls),
        pretrain_classes=pre_cls,
        finetune_classes=ft_cls,
    )
