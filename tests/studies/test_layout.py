"""The study contract, checked on the source: behaviour never depends on which keys were set, and
no module grows past what a reader takes in at once."""
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "ftaudit"


def test_no_behaviour_depends_on_which_keys_were_set():
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if "model_fields_set" in p.read_text()]
    assert not offenders, f"decide from values, not from which keys were set: {offenders}"


def test_no_module_over_400_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"split these modules: {long}"
