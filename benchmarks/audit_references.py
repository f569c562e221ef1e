"""Does `ftaudit audit --references` (LiRA offline, fine-tuning-aware references) beat model-only LOSS
at 1 % FPR? One measured run, paired bootstrap CI of the TPR difference (docs/audit.md).

A 384-token BPE and a tiny GPT-2 (1 layer, 32 wide, random init = the "base") as in tests/audit_user;
the target is the base fine-tuned by a plain PyTorch loop (AdamW) on 150 short Shakespeare paragraphs
(members); 150 others are the non-members, 400 more the population (--n, --pop). The references use the same
recipe through ftaudit's engine. Usage: python benchmarks/audit_references.py [--refs 8] [--out DIR]

    python benchmarks/audit_references.py --lora-timing [--refs 8]

times instead the training of N LoRA references (rank 4) by the packed trainer (engine.packed_lora)
against the per-model peft loop, each in a fresh store, and prints the ratio with the load average.
"""
import argparse
import csv
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "audit_user"))
from audit_user_world import finetune_lm, gpt2, save, write_txt  # noqa: E402

import ftaudit  # noqa: E402
from ftaudit.data.text import load_corpus  # noqa: E402
from ftaudit.data.tokenizer import train_tokenizer  # noqa: E402
from ftaudit.metrics.paired import paired_difference  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--refs", type=int, default=8)
    p.add_argument("--n", type=int, default=150)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--pop", type=int, default=400)
    p.add_argument("--out", default=None)
    p.add_argument("--lora-timing", action="store_true", help="packed LoRA vs per-model peft: reference training time")
    args = p.parse_args()
    torch.set_num_threads(1)
    root = Path(args.out or tempfile.mkdtemp(prefix="audit-refs-"))
    root.mkdir(parents=True, exist_ok=True)
    c = load_corpus("shakespeare")
    tok = train_tokenizer(c.documents[:400], vocab_size=384)
    rng = np.random.default_rng(0)
    pool = [q for q in sorted({" ".join(d.split()) for d in c.documents}) if 40 <= len(q) <= 140]
    pool = [pool[i] for i in rng.permutation(len(pool))]
    n = args.n
    members, nonmembers, population = pool[:n], pool[n:2 * n], pool[2 * n:2 * n + args.pop]
    base = save(gpt2(tok), tok, root / "base")
    t0 = time.time()
    model = save(finetune_lm(gpt2(tok), tok, members, epochs=args.epochs, lr=args.lr), tok, root / "model")
    target_s = time.time() - t0
    (root / "recipe.yaml").write_text(f"method: full\noptimizer: adam\nlr: {args.lr}\nepochs: {args.epochs}\n"
                                      "batch_size: 8\nmax_length: 64\n")
    if args.lora_timing:
        lora_timing(args, root, model, base, members, nonmembers, population)
        return
    t0 = time.time()
    res = ftaudit.audit(model, write_txt(root / "m.txt", members), write_txt(root / "n.txt", nonmembers), base=base,
                        out=root / "store", references=args.refs, recipe=str(root / "recipe.yaml"),
                        population=write_txt(root / "p.txt", population), regurgitation=False,
                        metrics__bootstrap=1000)
    audit_s = time.time() - t0
    for a in res.results["attacks"]:
        tpr = next((t for t in a["tpr_at_fpr"] if abs(t["fpr"] - 0.01) < 1e-12), None)
        print(f"{a['name']:>13}  AUC {a['auc']['value']:.3f} [{a['auc']['lo']:.3f}, {a['auc']['hi']:.3f}]"
              + (f"  TPR@1% {tpr['value']:.3f} [{tpr['lo']:.3f}, {tpr['hi']:.3f}]" if tpr else ""))
    rows = list(csv.DictReader(io.StringIO((res.path / "records.csv").read_text())))
    scores = {k: np.array([float(r[k]) for r in rows]) for k in ("loss", "lira-offline", "lm-ratio")}
    labels = np.array([r["member"] == "1" for r in rows])
    for other in ("lira-offline", "lm-ratio"):
        d = paired_difference(scores["loss"], scores[other], labels, np.arange(2 * n), 0.01, n_boot=2000, seed=0,
                              names=("loss", other))
        print(f"{other} - loss: TPR@1% {d.tpr_diff:+.3f} [{d.tpr_diff_lo:+.3f}, {d.tpr_diff_hi:+.3f}], "
              f"AUC {d.auc_diff:+.3f} [{d.auc_diff_lo:+.3f}, {d.auc_diff_hi:+.3f}]")
    print(f"target fine-tune {target_s:.1f}s, audit with {args.refs} references {audit_s:.1f}s "
          f"({res.results['audit']['references']['trained']} trained)")


def lora_timing(args, root: Path, model: str, base: str, members, nonmembers, population) -> None:
    import os

    (root / "lora.yaml").write_text(f"method: lora\nlora_rank: 4\noptimizer: adam\nlr: {args.lr}\n"
                                    f"epochs: {args.epochs}\nbatch_size: 8\nmax_length: 64\n")
    files = [write_txt(root / f"{k}.txt", v) for k, v in (("m", members), ("n", nonmembers), ("p", population))]
    seconds = {}
    for packed in (True, False):
        res = ftaudit.audit(model, files[0], files[1], base=base, out=root / f"store-{packed}", references=args.refs,
                            recipe=str(root / "lora.yaml"), population=files[2], regurgitation=False,
                            metrics__bootstrap=100, engine__packed_lora=packed)
        seconds[packed] = res.results["timings"]["references"]
        print(f"{'packed LoRA' if packed else 'per-model peft loop':>20}: {args.refs} references trained in "
              f"{seconds[packed]:.1f} s (load average {os.getloadavg()[0]:.2f}, "
              f"{res.results['audit']['references']['trained']} trained)")
    print(f"ratio: {seconds[False] / seconds[True]:.2f}")


if __name__ == "__main__":
    main()
