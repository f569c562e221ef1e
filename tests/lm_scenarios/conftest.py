import pytest
from lm_worlds import sets

from ftaudit.cli import main


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny LMs are dispatch-bound; the scenarios pick one thread themselves, this covers the helpers."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cli_error(capsys):
    """Runs a scenario expected to stop on bad input; returns (exit code, stderr)."""
    def run(scenario, overrides, store):
        with pytest.raises(SystemExit) as info:
            main(["run", scenario, "-q", *sets(overrides, store)])
        return info.value.code, capsys.readouterr().err
    return run
