"""Tiny LM worlds that run end to end through the CLI in seconds (shared by this folder's tests)."""
from __future__ import annotations

import json
from pathlib import Path

from ftaudit.cli import main
from ftaudit.store.db import RunDB

# A 1-layer, 32-wide model on 16-token blocks: pretrains and fine-tunes 4 models in a few seconds.
TINY = ["lm.vocab_size=300", "lm.block_len=16", "lm.n_blocks=48", "lm.population=16", "lm.pretrain_blocks=96",
        "lm.pretrain_epochs=2", "lm.pretrain_lr=0.01", "lm.n_layer=1", "lm.n_embd=32", "lm.pretrain_batch_size=8", "finetune.batch_size=8",
        "finetune.references=3", "metrics.bootstrap=100", "metrics.exposed=5"]
# Fine-tuned until the models memorise their halves: membership is then known to show.
MEMORISE = ["finetune.epochs=12", "finetune.lr=0.01"]


def sets(overrides: list[str], store: Path) -> list[str]:
    return [a for o in overrides + [f"out={store}"] for a in ("--set", o)]


def cli_run(scenario: str, overrides: list[str], store: Path) -> tuple[dict, Path]:
    """``ftaudit run SCENARIO -q --set ...``; returns the stored results and the run directory."""
    try:
        main(["run", scenario, "-q", *sets(overrides, store)])
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
    run_dir = Path(RunDB(store / "ftaudit.sqlite").runs()[-1].path)
    return json.loads((run_dir / "results.json").read_text()), run_dir
