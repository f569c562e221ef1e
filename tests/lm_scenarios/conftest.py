import pytest
from lm_worlds import sets

from ftaudit.cli import main


@pytest.fixture
def cli_error(capsys):
    """Runs a scenario expected to stop on bad input; returns (exit code, stderr)."""
    def run(scenario, overrides, store):
        with pytest.raises(SystemExit) as info:
            main(["run", scenario, "-q", *sets(overrides, store)])
        return info.value.code, capsys.readouterr().err
    return run
