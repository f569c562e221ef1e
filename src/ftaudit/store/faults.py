"""Fault injection for the store's crash tests: ``FTAUDIT_FAULT=<point>[:<substring>][@INT|@STOP]``.

At the named point (and, with a substring, only when the point's detail — a path, key or group
name — contains it) the process kills itself with SIGKILL (``@INT``: sends itself SIGINT, as
Ctrl-C does; ``@STOP``: stops until the test sends SIGCONT): the tests inject a fault at an exact
moment instead of racing a timer. Unset (always, outside tests), every call is a dictionary lookup.

Points: ``tmp-written`` (a temp file is written, not yet renamed; detail: the target path),
``model-saved`` (a model entry is in the cache; detail: its key), ``at-commit`` (inside the
transaction inserting a run's pending row, before COMMIT), ``after-row`` (pending row committed,
directory not yet renamed), ``after-rename`` (directory in place, row still pending),
``at-complete`` (inside the transaction marking the row complete, before COMMIT), ``training`` (the
engine holds the claims on a chunk of models, found them still missing, and starts training them;
detail: the group name), ``task`` (a Ray task starts in its worker; detail: the training group's
name, or ``signals:<signal>`` for a signal job).
"""
from __future__ import annotations

import os
import signal

ENV = "FTAUDIT_FAULT"


def fault_point(name: str, detail: str = "") -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    spec, _, sig = spec.partition("@")
    point, _, needle = spec.partition(":")
    if point == name and needle in detail:
        os.kill(os.getpid(), {"INT": signal.SIGINT, "STOP": signal.SIGSTOP}.get(sig, signal.SIGKILL))
