"""TPR at 1 % FPR against the number of reference models: LiRA and RMIA (ftaudit's variant and the
paper's protocol), online and offline, on one study's signals (docs/reproductions.md).

One ensemble of MAX + 1 models (rounded up to even) is trained once through the study (cached in
OUT); every even reference count k then re-runs the attacks leave-one-out on the same targets with
k references per audit example: k/2 IN and k/2 OUT drawn per (target, example) from the target's
MAX references (offline attacks use the k/2 OUT), as ``attack.references`` does in finetune-mia. The
first k references of each target would not do: which of them are IN would depend on the target's
own membership and bias lira-online's null AUC at small k (tests/attacks/test_reference_cap.py).
Each point has its cluster-bootstrap CI (resampling audit examples); at each k the paired CI of
(best RMIA − best LiRA) says which is ahead, or "not resolved".

    python benchmarks/reference_sweep.py --study finetune-mia [--max-refs 32] [--targets 8] [--out DIR]
    python benchmarks/reference_sweep.py --study lm-mia --max-refs 16
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ftaudit.attacks import leave_one_out
from ftaudit.config_build import build_config
from ftaudit.metrics import summarize
from ftaudit.metrics.paired import paired_difference
from ftaudit.studies import Context, get_study
from ftaudit.store.runs import Store
from ftaudit.train.engine import Engine

LIRA = ["lira-online", "lira-online-global", "lira-offline", "lira-offline-global"]
RMIA = ["rmia-online", "rmia-offline", "rmia-paper-online", "rmia-paper-offline"]
FPR = 0.01


def study_signals(study: str, max_refs: int, out: Path, overrides: list[str]):
    cfg = build_config(study, None, [f"finetune.references={max_refs}", f"out={out}", *overrides])
    store = Store(cfg.out)
    ctx = Context(store=store, engine=Engine(store.models, cfg.engine, None))
    start = time.perf_counter()
    output = get_study(cfg.study).run(cfg, ctx)
    print(f"# {study}: {ctx.models_trained} models trained, {ctx.models_loaded} loaded, "
          f"{time.perf_counter() - start:.0f}s, load {os.getloadavg()[0]:.2f}", flush=True)
    return output.evaluation.inputs.signals, cfg


def sweep(signals, cfg, counts: list[int], n_targets: int, n_boot: int) -> list[dict]:
    rows = []
    for k in counts:
        pooled = leave_one_out(signals, LIRA + RMIA, {}, range(n_targets), cfg.finetune.references, seed=cfg.seed,
                               cap=k)
        row = {"references": k}
        for name in LIRA + RMIA:
            m = summarize(pooled.scores[name], pooled.labels, groups=pooled.example, fprs=(FPR,), n_boot=n_boot)
            t = m.tpr_at(FPR)
            row[name] = {"tpr": t.value, "lo": t.lo, "hi": t.hi, "auc": m.auc.value}
        best_lira = max(LIRA, key=lambda n: row[n]["tpr"])
        best_rmia = max(RMIA, key=lambda n: row[n]["tpr"])
        d = paired_difference(pooled.scores[best_lira], pooled.scores[best_rmia], pooled.labels, pooled.example, FPR,
                              n_boot=n_boot, names=(best_lira, best_rmia))
        verdict = "RMIA ahead" if d.tpr_diff_lo > 0 else "LiRA ahead" if d.tpr_diff_hi < 0 else "not resolved"
        row["paired"] = {"lira": best_lira, "rmia": best_rmia, "diff": d.tpr_diff, "lo": d.tpr_diff_lo,
                         "hi": d.tpr_diff_hi, "verdict": verdict}
        rows.append(row)
        print(f"k={k:>2}  " + "  ".join(f"{n} {row[n]['tpr']:.1%} [{row[n]['lo']:.1%}, {row[n]['hi']:.1%}]"
                                         for n in LIRA + RMIA), flush=True)
        print(f"      best RMIA ({best_rmia}) − best LiRA ({best_lira}): {d.tpr_diff:+.1%} "
              f"[{d.tpr_diff_lo:+.1%}, {d.tpr_diff_hi:+.1%}] → {verdict}  (both picked after the fact)", flush=True)
    return rows


def plot(rows: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(9, 4.8))
    ks = [r["references"] for r in rows]
    styles = ["-", "--", "-.", ":"]
    for i, name in enumerate(LIRA + RMIA):
        v = np.array([r[name]["tpr"] for r in rows])
        lo, hi = np.array([r[name]["lo"] for r in rows]), np.array([r[name]["hi"] for r in rows])
        color = f"C{i}"
        ax.plot(ks, v, styles[i % 4], marker="o", color=color, label=name)
        ax.fill_between(ks, lo, hi, color=color, alpha=0.08)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("reference models per target")
    ax.set_ylabel(f"TPR at {FPR:.0%} FPR")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--study", default="finetune-mia")
    p.add_argument("--max-refs", type=int, default=32)
    p.add_argument("--targets", type=int, default=8)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--out", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--figure", default=None, help="PNG path (default docs/reference-sweep-<study>.png)")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="ref-sweep-"))
    signals, cfg = study_signals(args.study, args.max_refs, out, args.overrides)
    counts = [k for k in (2, 4, 8, 16, 32, 64) if k <= args.max_refs]
    rows = sweep(signals, cfg, counts, args.targets, args.bootstrap)
    figure = Path(args.figure or Path(__file__).resolve().parents[1] / "docs" / f"reference-sweep-{args.study}.png")
    plot(rows, f"{args.study}: TPR at 1 % FPR vs references ({args.targets} targets, {signals.n_examples} examples)",
         figure)
    (out / f"reference-sweep-{args.study}.json").write_text(json.dumps(rows, indent=1))
    print(f"# figure {figure}; rows {out / f'reference-sweep-{args.study}.json'}; load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
