"""The built-in studies' one-line descriptions, importable without torch.

``ftaudit studies`` lists these without importing any study module (a study module imports torch
and more: seconds). Each entry must equal its ``Study.description``, and the names must be the
registry's ``BUILTIN`` in order: ``tests/cli/test_cli_listing.py`` checks both.
"""
from __future__ import annotations

STUDIES: dict[str, str] = {
    "finetune-mia": "membership of the fine-tuning data on digits (LOSS, base reference, LiRA, RMIA)",
    "methods": "which fine-tuning method leaks most: methods × learning rates, leakage vs accuracy, Pareto frontier",
    "dp-finetune": "DP fine-tuning: layer subsets × ε frontier with a priced search, MIA vs ε, empirical ε audit",
    "forgetting": "how leakage of injected digits fades with further training (inject/poison, deterministic vs not, "
                  "repetitions)",
    "tmi": "TMI: membership of the PRETRAINING digits, from queries to the fine-tuned model (metaclassifiers vs "
           "adapted LiRA and a threshold; sweeps over shadows, method, DP ε, queries)",
    "tmi-text": "TMI on text: membership of the PRETRAINING blocks of a tiny GPT-2, from queries to its fine-tuned "
                "version (sweeps over shadows, method, DP ε, queries)",
    "lm-mia": "causal LM: membership of fine-tuning text blocks (LOSS, zlib, Min-K %, Min-K %++, ratio to base / "
              "reference, LiRA, RMIA)",
    "mlm-ratio": "masked LM: PLL alone vs likelihood ratio to the base / a disjoint reference MLM (AUC, TPR at "
                 "1 % FPR, paired CIs)",
    "lm-methods": "causal LM: full / head / adapters / LoRA × learning rates; recall at 10 % / 1 % FPR vs validation "
                  "perplexity, Pareto frontier",
    "lm-extraction": "causal LM: canary exposure vs insertions (rank and skew-normal) and extraction of training text "
                     "by generation (precision / recall)",
    "stealing": "model extraction of fine-tuned BERT classifiers through their API: base identification (latency, "
                "outputs), weight estimation by distillation from the base, Fisher pruning",
    "audit": "audit your own fine-tuned model: membership of its fine-tuning records (model only, + base ratio, "
             "+ canaries), records.csv, verdict, gate",
}
