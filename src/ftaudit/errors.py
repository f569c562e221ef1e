"""The one error type a user can cause.

Everything the user controls (CLI arguments, config files, `--set` overrides, run ids, data files)
is validated up front and reported as a :class:`UserError`: one line naming the field and the fix.
The CLI prints it and exits with status 2, no traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: ``field`` names what is wrong, ``fix`` says what to do."""

    exit_code = 2

    def __init__(self, field: str, problem: str, fix: str | None = None):
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = f"{self.field}: {self.problem}"
        if self.fix:
            text += f" — {self.fix}"
        return text
