import pytest

from ftaudit.data.text import load_corpus
from ftaudit.data.tokenizer import train_tokenizer


@pytest.fixture(scope="session")
def shakespeare():
    return load_corpus("shakespeare")


@pytest.fixture(scope="session")
def small_tok(shakespeare, tmp_path_factory):
    """A 384-token byte-level BPE on part of the bundled Shakespeare (trains in well under a second)."""
    return train_tokenizer(shakespeare.documents[:400], vocab_size=384, cache_dir=tmp_path_factory.mktemp("tok"))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny LMs are dispatch-bound: a second thread buys nothing, and on a shared 2-core machine an
    OpenMP thread waiting for a busy core made these tests 5-20x slower. Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
