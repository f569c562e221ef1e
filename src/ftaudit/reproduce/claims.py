"""The headline claims ftaudit's studies follow, each with the run that tests it and how it is judged.

A :class:`Claim` names a study and a preset (:mod:`ftaudit.presets`), the difference the claim is
about, the side the claim puts it on (and a bound, for a level or an invariant), and a function
that reads that difference with its CI from the run's stored results (``results.json`` and
``arrays/``: nothing is recomputed from models). The verdict is :func:`ftaudit.reproduce.verdict.verdict`.

``minutes`` is the measured wall time of the claim's run from an empty store on the 2-core
development machine while other jobs shared it (an upper bound; docs/reproductions.md gives the load).
``default``: run by ``ftaudit reproduce`` without an argument (together about 30 minutes on 2 cores).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ftaudit.errors import UserError
from ftaudit.reproduce.verdict import Direction, Interval


@dataclass(frozen=True)
class Measured:
    """What a claim's run measured: our number in words, the claimed difference with its CI, how it was read."""

    ours: str
    diff: Interval
    diff_text: str  # what the difference is, with its value and CI, in words
    note: str = ""


@dataclass(frozen=True)
class Claim:
    name: str
    source: str        # the paper
    claim: str         # the claim in one sentence
    paper: str         # the paper's number (or what it reports)
    study: str
    preset: str | None
    difference: str    # the difference the verdict is about, in words
    direction: Direction
    extract: Callable[[dict, Path], Measured]
    bound: float = 0.0
    invariant: bool = False
    default: bool = True
    minutes: float = 0.0

    def command(self) -> str:
        return f"ftaudit reproduce {self.name}   # = ftaudit run {self.study}" + (
            f" --preset {self.preset}" if self.preset else "")


# ----------------------------------------------------------------------------------------- readers


def _arrays(run_dir: Path, *attacks: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    a = run_dir / "arrays"
    missing = [n for n in attacks if not (a / f"scores-{n}.npy").is_file()]
    if missing:
        raise UserError("attack.names", f"the run has no scores of {', '.join(missing)}",
                        "the claim needs them: keep them in attack.names")
    return (np.load(a / "labels.npy"), np.load(a / "example.npy"),
            [np.load(a / f"scores-{n}.npy") for n in attacks])


def _attack(results: dict, name: str) -> dict:
    for att in results["attacks"]:
        if att["name"] == name:
            return att
    raise UserError("attack.names", f"the run has no attack {name!r}", "the claim needs it: keep it in attack.names")


def _auc_text(results: dict, name: str) -> str:
    auc = _attack(results, name)["auc"]
    return f"{auc['value']:.3f} [{auc['lo']:.3f}, {auc['hi']:.3f}]"


def _tpr(results: dict, name: str, fpr: float = 0.01) -> dict:
    return next(t for t in _attack(results, name)["tpr_at_fpr"] if math.isclose(t["fpr"], fpr))


def _section(results: dict, title: str) -> dict:
    for s in results.get("sections", []):
        if s["title"] == title or s["title"].startswith(title):
            return s
    raise UserError("study", f"the run has no section {title!r}", "run the claim's study with its preset")


_INTERVAL = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)(%?)\s*\[\s*([+-]?\d+(?:\.\d+)?)%?\s*,\s*([+-]?\d+(?:\.\d+)?)%?\s*\]")


def parse_interval(text: str) -> Interval:
    """'+0.123 [+0.010, +0.200]' or '68.8% [62.5%, 76.0%]' (a fraction then) → Interval."""
    m = _INTERVAL.match(text)
    if m is None:
        raise ValueError(f"not a value with its interval: {text!r}")
    scale = 0.01 if m.group(2) else 1.0
    return Interval(float(m.group(1)) * scale, float(m.group(3)) * scale, float(m.group(4)) * scale)


def _paired(results: dict, run_dir: Path, a: str, b: str, metric: str, fpr: float = 0.01) -> Interval:
    """b − a on the run's stored rows: the pipeline's paired cluster bootstrap (audit examples), with
    the run's bootstrap count, level and seed."""
    from ftaudit.metrics.paired import paired_difference

    labels, example, (sa, sb) = _arrays(run_dir, a, b)
    cfg = results["config"]
    d = paired_difference(sa, sb, labels, example, fpr, cfg["metrics"]["bootstrap"], cfg["metrics"]["ci_level"],
                          cfg["seed"], names=(a, b))
    if metric == "auc":
        return Interval(d.auc_diff, d.auc_diff_lo, d.auc_diff_hi)
    if metric == "factor":
        return Interval(d.tpr_factor, d.tpr_factor_lo, d.tpr_factor_hi)
    return Interval(d.tpr_diff, d.tpr_diff_lo, d.tpr_diff_hi)


def _pts(i: Interval) -> str:
    return f"{i.value * 100:+.1f} pts [{i.lo * 100:+.1f}, {i.hi * 100:+.1f}]"


def _num(i: Interval, digits: int = 3) -> str:
    return f"{i.value:+.{digits}f} [{i.lo:+.{digits}f}, {i.hi:+.{digits}f}]"


# ----------------------------------------------------------------------------------------- claims


def rmia_few_references(results: dict, run_dir: Path) -> Measured:
    d = _paired(results, run_dir, "lira-offline", "rmia-paper-offline", "tpr")
    t_r, t_l = _tpr(results, "rmia-paper-offline"), _tpr(results, "lira-offline")
    refs = results["config"]["attack"].get("references") or results["config"]["finetune"]["references"]
    best = {fam: max((a for a in results["attacks"] if a["name"].startswith(fam)),
                     key=lambda a: _tpr(results, a["name"])["value"]) for fam in ("lira", "rmia")}
    after = _paired(results, run_dir, best["lira"]["name"], best["rmia"]["name"], "tpr")
    return Measured(
        ours=(f"{refs} references: rmia-paper-offline {t_r['value']:.1%} [{t_r['lo']:.1%}, {t_r['hi']:.1%}], "
              f"lira-offline {t_l['value']:.1%} [{t_l['lo']:.1%}, {t_l['hi']:.1%}] TPR at 1 % FPR"),
        diff=d, diff_text=f"rmia-paper-offline − lira-offline, TPR at 1 % FPR: {_pts(d)}",
        note=(f"Best of each family picked after the fact: {best['rmia']['name']} − {best['lira']['name']} "
              f"{_pts(after)}. The reference-count sweep (docs/rmia.md) has the other k."))


def mlm_ratio(results: dict, run_dir: Path) -> Measured:
    d = _paired(results, run_dir, "mlm-pll", "mlm-ratio", "auc")
    f = _paired(results, run_dir, "mlm-pll", "mlm-ratio", "factor")
    return Measured(
        ours=f"AUC {_auc_text(results, 'mlm-pll')} → {_auc_text(results, 'mlm-ratio')}; TPR at 1 % FPR "
             f"{f.value:.1f}× [{f.lo:.1f}, {f.hi:.1f}]",
        diff=d, diff_text=f"AUC of mlm-ratio − mlm-pll: {_num(d)}",
        note=(f"At 1 % FPR the ratio finds {f.value:.1f}× [{f.lo:.1f}, {f.hi:.1f}] the members PLL alone finds: "
              + ("the paper's 51× lies above that CI." if f.hi < 51 else "the paper's 51× is within reach.")))


def dp_layers(results: dict, run_dir: Path) -> Measured:
    from ftaudit.studies.digits.dp_finetune import INTERMEDIATE_TITLE

    row = _section(results, INTERMEDIATE_TITLE)["table"][0]
    d = Interval(row["difference"], row["difference lo"], row["difference hi"])
    return Measured(
        ours=(f"ε = {row['ε target']}: {row['intermediate subset']} {row['its test accuracy']:.1%} vs "
              f"{row['full or head']} {row['their test accuracy']:.1%} test accuracy (n = {row['n test']})"),
        diff=d, diff_text=f"test accuracy, best intermediate − best of full/head (both picked on validation): {_pts(d)}")


def dp_epsilon(results: dict, run_dir: Path) -> Measured:
    rows = _section(results, "Empirical ε")["table"]
    worst, text = None, []
    for r in rows:
        acc = math.inf if r["accounted ε"] is None else float(r["accounted ε"])  # JSON has no inf: ε = ∞ is null
        for kind in ("canary", "one-run"):
            lb = float(r[f"{kind} lower bound"])
            if math.isfinite(acc) and (worst is None or lb - acc > worst[0]):
                worst = (lb - acc, kind, lb, acc)
        text.append(f"{r['ε target']}: {max(float(r['canary lower bound']), float(r['one-run lower bound'])):.2f}")
    if worst is None:
        raise UserError("sweep.epsilons", "no finite ε in the run", "include a finite ε")
    gap, kind, lb, acc = worst
    return Measured(
        ours="largest empirical lower bound per ε target: " + ", ".join(text),
        diff=Interval(gap, gap, math.inf),
        diff_text=f"(empirical ε lower bound − accounted ε), closest: {kind} {lb:.3f} at accounted {acc:.3f}, "
                  f"lower bound of the gap {gap:+.3f}",
        note="A one-sided lower confidence bound: the invariant fails only if it lies above the accounted ε "
             "(the run itself stops with EpsilonViolation then).")


def _method_pairs(results: dict) -> dict[tuple[str, str], Interval]:
    """lm-methods' paired table: (x, y) → recall at 10 % FPR of x's matched cell − y's, both orders."""
    from ftaudit.studies.lm.methods import PAIRED_TITLE

    table = _section(results, PAIRED_TITLE)["table"]
    pairs = {}
    for r in table:
        key = next(k for k in r if k.endswith(" a − b"))
        pairs[(r["method a"], r["method b"])] = Interval(r[key], r["lo"], r["hi"])
        pairs[(r["method b"], r["method a"])] = Interval(-r[key], -r["hi"], -r["lo"])
    return pairs


def _method_extreme(results: dict, method: str, most: bool) -> Measured:
    """``method`` against every other method at matched perplexity; the verdict is read on the pair
    closest to contradicting the claim (smallest lower bound for "leaks most", largest upper bound for
    "leaks least"), so "reproduced" means every pair agrees."""
    pairs = _method_pairs(results)
    mine = {b: d for (a, b), d in pairs.items() if a == method}
    if not mine:
        raise UserError("sweep.methods", f"the claim compares {method} with the other methods",
                        f"keep {method} and at least one other in sweep.methods")
    other = min(mine, key=lambda b: mine[b].lo) if most else max(mine, key=lambda b: mine[b].hi)
    listed = ", ".join(f"{method} − {b} {_pts(d)}" for b, d in mine.items())
    return Measured(ours=f"recall at 10 % FPR at matched perplexity (lm-ratio), paired over blocks: {listed}",
                    diff=mine[other], diff_text=f"{method} − {other} (the pair closest to the bound): {_pts(mine[other])}")


def lm_methods_head(results: dict, run_dir: Path) -> Measured:
    return _method_extreme(results, "head", most=True)


def lm_methods_adapters(results: dict, run_dir: Path) -> Measured:
    return _method_extreme(results, "adapters", most=False)


def forgetting(results: dict, run_dir: Path) -> Measured:
    table = _section(results, "Deterministic vs nondeterministic training")["table"]
    row = next((r for r in table if r["schedule"] == "inject"), None)
    if row is None:
        raise UserError("forgetting.determinism", "the claim needs both determinism settings of the inject schedule",
                        "use determinism=both with the inject schedule")
    d = parse_interval(row["drop det − drop nondet"])
    texts = [t for t in _section(results, "Deterministic vs nondeterministic training")["text"]
             if t.startswith("inject · ")]
    ours = "; ".join(t.split(" — ")[0].replace(" right after the last exposure", " at once").replace("AUC ", "")
                     for t in texts)
    return Measured(ours=ours, diff=d,
                    diff_text=f"AUC drop (first − last checkpoint), deterministic − nondeterministic: {_num(d)}")


def tmi(results: dict, run_dir: Path) -> Measured:
    d = _paired(results, run_dir, "adapted-lira", "tmi", "auc")
    return Measured(ours=f"TMI AUC {_auc_text(results, 'tmi')}, adapted LiRA {_auc_text(results, 'adapted-lira')}",
                    diff=d, diff_text=f"AUC of tmi − adapted-lira: {_num(d)}")


def stealing(results: dict, run_dir: Path) -> Measured:
    rows = _section(results, "Weight estimation vs query budget")["table"]
    mine = [r for r in rows if r["student starts from"] == "identified base" and r["victim"].endswith("(full)")]
    if not mine:
        raise UserError("stealing.victim_methods", "the claim is about a fully fine-tuned victim", "keep full")
    top = max(mine, key=lambda r: r["queries"])
    agree = parse_interval(top["agreement"])
    others = ", ".join(f"{r['victim'].split('(')[-1].rstrip(')')} {r['agreement'].split(' ')[0]}"
                       for r in rows if r["student starts from"] == "identified base" and r["queries"] == top["queries"])
    return Measured(ours=f"{top['queries']} queries, identified base: {others}", diff=agree,
                    diff_text=f"agreement of the student with the fully fine-tuned victim: {agree.value:.1%} "
                              f"[{agree.lo:.1%}, {agree.hi:.1%}] against the paper's 94 %")


CLAIMS: list[Claim] = [
    Claim("rmia-few-references", "Zarifzadeh, Liu & Shokri, ICML 2024 (RMIA)",
          "With few reference models, RMIA is at least as strong as LiRA (offline, the paper's protocol).",
          "RMIA ahead of LiRA most of all with 1-2 reference models (offline), in AUC and TPR at low FPR",
          "finetune-mia", "few-references", "TPR at 1 % FPR, rmia-paper-offline − lira-offline (fixed beforehand)",
          "greater", rmia_few_references, minutes=4),
    Claim("mlm-ratio", "Mireshghallah et al., EMNLP 2022 (masked LMs)",
          "A masked LM that looks robust to a loss attack leaks once the attack takes a likelihood ratio to a reference.",
          "AUC 0.66 → 0.90; 51× TPR at 1 % FPR (clinical notes, BERT-base)",
          "mlm-ratio", None, "AUC, mlm-ratio − mlm-pll (paired over blocks)", "greater", mlm_ratio, minutes=3),
    Claim("dp-layers", "Cattan et al., 2022 (DP fine-tuning: which layers)",
          "At small ε the best subset of layers to fine-tune is neither all of them nor the head alone.",
          "77.9 % at ε = 2 on CIFAR-100 from ImageNet, with an intermediate subset best",
          "dp-finetune", "class-gap", "test accuracy at the smallest ε, best intermediate subset − best of full/head",
          "greater", dp_layers, minutes=5.5),
    Claim("dp-epsilon", "DP's guarantee (audited as Steinke, Nasr & Jagielski 2023 and by canaries)",
          "No empirical lower bound on ε exceeds the accounted ε.",
          "empirical ε ≤ accounted ε (an invariant)", "dp-finetune", "class-gap",
          "empirical ε lower bound − accounted ε, the largest over every ε and both audits", "less", dp_epsilon,
          invariant=True, minutes=0),
    Claim("methods-head-most", "Mireshghallah et al., EMNLP 2022 (memorization in fine-tuning methods)",
          "Fine-tuning only the head leaks most by membership inference.",
          "head-only fine-tuning: the highest MIA recall of full, head and adapters (GPT-2)",
          "lm-methods", "large-head", "lm-ratio recall at 10 % FPR at matched perplexity, head − every other method",
          "greater", lm_methods_head, minutes=8),
    Claim("methods-adapters-least", "Mireshghallah et al., EMNLP 2022 (memorization in fine-tuning methods)",
          "Fine-tuning adapters leaks least by membership inference.",
          "adapters: the lowest MIA recall of full, head and adapters (GPT-2)",
          "lm-methods", "large-head", "lm-ratio recall at 10 % FPR at matched perplexity, adapters − every other method",
          "less", lm_methods_adapters, minutes=0),
    Claim("forgetting-deterministic", "Jagielski et al., ICLR 2023 (measuring forgetting)",
          "Deterministic training (identical order and kernels) does not forget; nondeterministic training does.",
          "deterministic exposure stays flat while nondeterministic exposure decays (figures)",
          "forgetting", "deterministic-sparse", "AUC drop over training, deterministic − nondeterministic",
          "less", forgetting, minutes=2),
    Claim("tmi", "Abascal et al., 2023 (TMI)",
          "Per-point metaclassifiers on a fine-tuned model's outputs infer membership of its pretraining data better "
          "than an adapted LiRA.",
          "TMI above the LiRA-based baseline (64 shadow models)", "tmi", "paper-shadows",
          "AUC, tmi − adapted-lira (paired over (victim, point) rows)", "greater", tmi, minutes=6.5),
    Claim("stealing-agreement", "Al Rafi et al., 2024 (extracting fine-tuned BERT)",
          "A student distilled from the victim's answers, starting from the identified base, agrees with it on more "
          "than 94 % of inputs.", "> 94 % agreement", "stealing", "many-queries",
          "agreement with a fully fine-tuned victim at the largest query budget, against 94 %", "greater", stealing,
          bound=0.94, default=False, minutes=23),
]

BY_NAME = {c.name: c for c in CLAIMS}


def get_claim(name: str) -> Claim:
    if name in BY_NAME:
        return BY_NAME[name]
    from ftaudit.config_input import did_you_mean

    raise UserError("CLAIM", f"unknown claim {str(name)[:80]!r}",
                    f"{did_you_mean(name, BY_NAME)}choose one of: {', '.join(BY_NAME)} (`ftaudit reproduce --list`)")
