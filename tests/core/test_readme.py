"""The configuration tables are generated from the schemas: they must list every key."""
from pathlib import Path

from ftaudit.config_build import config_keys
from ftaudit.studies import names

ROOT = Path(__file__).resolve().parents[2]


def test_readme_lists_every_key_of_the_default_study():
    text = (ROOT / "README.md").read_text()
    missing = [key for key, _, _ in config_keys() if f"| `{key}` |" not in text]
    assert not missing, f"README config table lacks {missing}: regenerate it with scripts/config_table.py"


def test_configuration_doc_lists_every_key_of_every_study():
    text = (ROOT / "docs" / "configuration.md").read_text()
    for study in names():
        section = text.split(f"## `{study}`", 1)
        assert len(section) == 2, f"docs/configuration.md has no section for {study}"
        body = section[1].split("\n## ", 1)[0]
        missing = [key for key, _, _ in config_keys(study) if f"| `{key}` |" not in body]
        assert not missing, f"docs/configuration.md lacks {missing} for {study}: run scripts/config_table.py --all"
