"""Print the README's configuration table from the config schema (``ftaudit.config.config_keys``).

    python scripts/config_table.py   # paste between the table markers in README.md
"""
from ftaudit.config import config_keys


def table() -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, description in config_keys():
        lines.append(f"| `{key}` | `{default}` | {description.replace('|', '/')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
