"""Small wording helpers shared by the terminal, the logs and the report (no heavy imports)."""
from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 epoch"``, ``"3 epochs"``, ``"2 queries"`` with ``many="queries"``."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"
