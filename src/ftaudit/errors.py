"""The one error type a user can cause.

Everything the user controls (CLI arguments, config files, `--set` overrides, run ids, data files)
is validated up front and reported as a :class:`UserError`: one line naming the field and the fix.
The CLI prints it and exits with status 2, no traceback.
"""
from __future__ import annotations

import reprlib

MAX_FIELD = 120     # characters of the field name in one_line()
MAX_PROBLEM = 400   # characters of the problem (it may quote the user's input)
MAX_FIX = 400

_REPR = reprlib.Repr()
_REPR.maxstring = 80
_REPR.maxother = 80
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 6
_REPR.maxlevel = 3


def shorten(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters (an ellipsis marks a cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def brief(value: object) -> str:
    """A short repr of a user's value for an error message (long strings, lists and dicts cut)."""
    return shorten(_REPR.repr(value), 100)


class UserError(Exception):
    """Bad input from the user: ``field`` names what is wrong, ``fix`` says what to do."""

    exit_code = 2

    def __init__(self, field: str, problem: str, fix: str | None = None):
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """One line, however long the input the message quotes."""
        text = f"{shorten(self.field, MAX_FIELD)}: {shorten(self.problem, MAX_PROBLEM)}"
        if self.fix:
            text += f" — {shorten(self.fix, MAX_FIX)}"
        return text
