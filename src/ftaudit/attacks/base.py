"""What one attack sees: a target model's signals plus its R reference models' signals.

Attacks are pure functions ``fn(inp: AttackInput, **params) -> float64 [N]`` where a higher score
means "more likely a member" for every attack, so metrics never need to know the attack.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from ftaudit.seeding import derive_seed
from ftaudit.signals.arrays import SignalSet

NEEDS = frozenset({"references", "base", "population", "scores"})


@dataclass(frozen=True)
class AttackInput:
    """Signals for ONE target model and its R references (N audit, A queries, Z population).

    target_conf, target_loss : [N, A]
    ref_conf, ref_loss       : [R, N, A]
    ref_keep                 : [R, N] bool, reference r trained on example n
    target_pop_loss          : [Z, A]
    ref_pop_loss             : [R, Z, A]
    base_loss                : [N, A] of the pretrained base, or None
    target_scores            : name -> [N] the target's precomputed scores (SignalSet.scores)
    ref_seed                 : seeds the draw of which references :attr:`ref_use` leaves out
    ref_cap                  : references per example the attacks may use (even; None = all, balanced)
    """

    target_conf: np.ndarray
    target_loss: np.ndarray
    ref_conf: np.ndarray
    ref_loss: np.ndarray
    ref_keep: np.ndarray
    target_pop_loss: np.ndarray
    ref_pop_loss: np.ndarray
    base_loss: np.ndarray | None = None
    target_scores: Mapping[str, np.ndarray] = field(default_factory=dict)
    ref_seed: int = 0
    ref_cap: int | None = None

    def __post_init__(self) -> None:
        if self.ref_cap is not None and (self.ref_cap < 2 or self.ref_cap % 2):
            raise ValueError(f"ref_cap must be even and >= 2 (half IN, half OUT), got {self.ref_cap}")
        n, a = self.target_conf.shape
        r = self.ref_conf.shape[0]
        z = self.target_pop_loss.shape[0]
        expected = {
            "target_loss": (n, a),
            "ref_conf": (r, n, a),
            "ref_loss": (r, n, a),
            "ref_keep": (r, n),
            "target_pop_loss": (z, a),
            "ref_pop_loss": (r, z, a),
        }
        if self.base_loss is not None:
            expected["base_loss"] = (n, a)
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} shape {getattr(self, name).shape} != {shape}")
        if self.ref_keep.dtype != np.bool_:
            raise ValueError("ref_keep must be bool")

    @property
    def n_refs(self) -> int:
        return self.ref_conf.shape[0]

    @property
    def n_examples(self) -> int:
        return self.target_conf.shape[0]

    @property
    def n_pop(self) -> int:
        return self.target_pop_loss.shape[0]

    @property
    def ref_use(self) -> np.ndarray:
        """The references balanced attacks use [R, N] bool: :func:`balanced_references` of
        ``ref_keep``, drawn from ``ref_seed`` (so every attack on this input sees the same draw),
        at most ``ref_cap // 2`` per side.

        Offline attacks use the OUT side of this same set (``ref_use & ~ref_keep``): under a cap of
        k that is k/2 OUT references, not the k OUT of the paper's offline protocol. Either keeps the
        null AUC at 0.5 while the count does not depend on the target's label (k/2, resp. k, at most
        min(n_in, n_out) for both labels); k/2 holds for larger k and needs no second mask in every
        offline attack. Population points are not capped: RMIA scores them with all R references."""
        per_side = None if self.ref_cap is None else self.ref_cap // 2
        return balanced_references(self.ref_keep, np.random.default_rng(self.ref_seed), per_side)


def balanced_references(ref_keep: np.ndarray, rng: np.random.Generator | None = None,
                        per_side: int | None = None) -> np.ndarray:
    """Which references to use [R, N] bool: per example, equally many IN and OUT ones.

    In leave-one-out evaluation every example is IN for a fixed share of the models, so the
    target's own membership shifts the IN/OUT counts among its references by one (IN target:
    one IN reference fewer). Any statistic whose precision depends on those counts then differs
    between members and non-members even when training leaks nothing, biasing the null AUC. Using
    m = min(n_in, n_out) references of each side makes the reference configuration independent of
    the target's label. With ``rng`` the m of each side are a uniformly random subset, drawn
    independently per example; without, the first m in reference order (the TMI shadows' rule,
    :mod:`ftaudit.attacks.tmi`). Examples lacking one side keep all.

    ``per_side`` caps m (a few-reference audit: k = 2 * per_side references per example, drawn
    from all R). A cap applied to the references instead (the first k of a target's) cannot be
    balanced this way: with k = 2 an example often has both references on one side, and how
    often depends on the target's own membership (lira-online's null AUC was 0.63 with 4 models).
    Under a cap an example lacking one side keeps at most 2 * per_side of the other.
    """
    keep = np.asarray(ref_keep, dtype=bool)
    r = keep.shape[0]
    if rng is None:
        keys = np.broadcast_to(np.arange(r, dtype=np.float64)[:, None] / max(r, 1), keep.shape)
    else:
        keys = rng.random(keep.shape)
    # IN rows sort before OUT rows, each side in key order: rank < n_in is the IN side's rank.
    order = np.argsort(keys + ~keep, axis=0, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(r)[:, None], axis=0)
    n_in = keep.sum(axis=0)
    m = np.minimum(n_in, r - n_in)
    if per_side is not None:
        m = np.minimum(m, per_side)
    use = np.where(keep, rank < m, rank - n_in < m)
    if per_side is None:
        return np.where(m > 0, use, True)
    lone = np.where(keep, rank < 2 * per_side, rank - n_in < 2 * per_side)
    return np.where(m > 0, use, lone)


def reference_seed(seed: int, target: int) -> int:
    """The seed of target ``target``'s draw of balanced references in a run seeded ``seed``."""
    return derive_seed(seed, "balanced-references", target)


def attack_input(signals: SignalSet, target: int, refs, seed: int = 0, cap: int | None = None) -> AttackInput:
    """Slice a SignalSet into the view of ``target`` attacked with reference models ``refs``.

    ``seed`` (the run's) and ``target`` decide which references :attr:`AttackInput.ref_use` drops;
    ``cap`` (even) is how many of ``refs`` each example may use."""
    refs = np.asarray(refs, dtype=np.int64)
    return AttackInput(
        target_conf=signals.conf[target],
        target_loss=signals.loss[target],
        ref_conf=signals.conf[refs],
        ref_loss=signals.loss[refs],
        ref_keep=signals.keep[refs],
        target_pop_loss=signals.pop_loss[target],
        ref_pop_loss=signals.pop_loss[refs],
        base_loss=signals.base_loss,
        target_scores={name: arr[target] for name, arr in signals.scores.items()},
        ref_seed=reference_seed(seed, target),
        ref_cap=cap,
    )


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack: its function, what inputs it needs and its tunable parameters.

    ``bounds`` maps a parameter to its allowed closed interval (None = unbounded side).
    """

    name: str
    fn: Callable[..., np.ndarray]
    description: str
    needs: frozenset = frozenset()
    defaults: Mapping[str, float] = field(default_factory=dict)
    bounds: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.needs <= NEEDS:
            raise ValueError(f"{self.name}: unknown needs {set(self.needs - NEEDS)}")
