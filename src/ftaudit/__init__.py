"""ftaudit: measure what a fine-tuned model leaks."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from ftaudit.api import audit, load_run, run
    from ftaudit.empirical.canaries import inject
    from ftaudit.errors import UserError
    from ftaudit.pipeline import RunResult


def __getattr__(name: str) -> Any:
    # Lazy: `import ftaudit` stays cheap (no torch import) until something is used.
    if name in ("run", "load_run", "audit"):
        from ftaudit import api
        return getattr(api, name)
    if name == "RunResult":
        from ftaudit.pipeline import RunResult
        return RunResult
    if name == "inject":
        from ftaudit.empirical.canaries import inject
        return inject
    if name == "UserError":
        from ftaudit.errors import UserError
        return UserError
    raise AttributeError(f"module 'ftaudit' has no attribute {name!r}")


__all__ = ["run", "audit", "load_run", "RunResult", "UserError", "inject", "__version__"]
