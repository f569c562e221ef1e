import os

import pytest

# Tests run on 2 cores next to other work: keep torch from oversubscribing.
os.environ.setdefault("OMP_NUM_THREADS", "2")

TINY = [
    "data.audit_size=60", "data.population_size=40", "pretrain.epochs=3", "finetune.epochs=4",
    "finetune.references=3", "metrics.bootstrap=50", "model.arch=mlp", "model.hidden=[32]",
    "pretrain.augment=0", "finetune.augment=0",
]


@pytest.fixture
def tiny_overrides(tmp_path):
    """Overrides for a whole run that takes a few seconds, storing under tmp_path."""
    return TINY + [f"out={tmp_path / 'store'}"]
