import os

import pytest

# Tests run on 2 cores next to other work: keep torch from oversubscribing. Under pytest-xdist
# (`-n 2`, set in pyproject's addopts) each of the two workers, and every CLI it starts, gets one
# thread: two single-threaded processes use both cores without an OpenMP thread waiting for a busy one.
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")

TINY = [
    "data.audit_size=60", "data.population_size=40", "pretrain.epochs=3", "finetune.epochs=4",
    "finetune.references=3", "metrics.bootstrap=50", "model.arch=mlp", "model.hidden=[32]",
    "pretrain.augment=0", "finetune.augment=0",
]


@pytest.fixture
def tiny_overrides(tmp_path):
    """Overrides for a whole run that takes a few seconds, storing under tmp_path."""
    return TINY + [f"out={tmp_path / 'store'}"]


# Text fixtures shared by the LM, extraction and TMI text tests.

@pytest.fixture(scope="session")
def shakespeare():
    from ftaudit.data.text import load_corpus

    return load_corpus("shakespeare")


@pytest.fixture(scope="session")
def small_tok(shakespeare, tmp_path_factory):
    """A 384-token byte-level BPE on part of the bundled Shakespeare (trains in well under a second)."""
    from ftaudit.data.tokenizer import train_tokenizer

    return train_tokenizer(shakespeare.documents[:400], vocab_size=384, cache_dir=tmp_path_factory.mktemp("tok"))


# Test directories (and files) of tiny LMs and TMI metaclassifiers: their tensors are small and
# dispatch-bound, and on a shared 2-core machine a second OpenMP thread waiting for a busy core made
# them 5-20x slower. Their tests run with one torch thread (restored after each module).
ONE_THREAD_DIRS = {"lm", "lm_scenarios", "extraction", "tmi"}
ONE_THREAD_FILES = {"test_tmi.py", "test_packed_lora.py"}


@pytest.fixture(scope="module")
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.parent.name in ONE_THREAD_DIRS or item.path.name in ONE_THREAD_FILES:
            item.fixturenames.insert(0, "one_torch_thread")  # first: before the module's own fixtures
