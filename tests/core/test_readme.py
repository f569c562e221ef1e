"""The README's configuration table is generated from the schema: it must list every key."""
from pathlib import Path

from ftaudit.config import config_keys

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_lists_every_config_key():
    text = README.read_text()
    missing = [key for key, _, _ in config_keys() if f"| `{key}` |" not in text]
    assert not missing, f"README config table lacks {missing}: regenerate it with scripts/config_table.py"
