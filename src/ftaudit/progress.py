"""Progress of a run: stages and counted tasks, shown as rich bars or as timestamped log lines.

Every stage (``ctx.stage``), training group (the engine), signal computation (``ctx.cached``) and
scoring loop reports here, and everything is logged through the ``ftaudit`` logger. The library adds
only a ``NullHandler``: a program that imports ftaudit sees nothing unless it configures logging or
asks for output with :func:`output` (as the CLI does):

* on a terminal, rich bars with counts, elapsed time and ETA for counted tasks, a spinner for each
  running stage, and one line for each finished stage and task;
* otherwise (CI logs, ``nohup``, a notebook cell, a pipe), plain timestamped log lines as it happens:
  a stage or task is announced once it has run for 2 s (one that ends sooner gets one line, when it
  ends: a run stays readable, and a bad input found early in a stage still prints only its error), a
  task logs every 10 % (at most one line a second), whatever runs innermost logs a line after 10 s
  without one, and each end is logged with its duration.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, TextIO, TypeVar

logging.getLogger("ftaudit").addHandler(logging.NullHandler())
log = logging.getLogger("ftaudit.progress")

STEP = 0.10  # a task logs a line each time another tenth is done,
MIN_GAP = 1.0  # but at most one line a second (log display)
HEARTBEAT = 10.0  # and whatever runs innermost logs at least one line every 10 s (log display)
START_DELAY = 2.0  # log display: a stage or task that ends within 2 s gets one line, when it ends
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

T = TypeVar("T")


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


class _Item:
    """A running stage (no total) or task (a total of units)."""

    def __init__(self, name: str, total: int | None = None, unit: str = ""):
        self.name, self.total, self.unit = name, total, unit
        self.done = 0
        self.start = self.last_line = time.monotonic()
        self.announced = False
        self.logged_tenths = 0
        self.row: Any = None  # its row in the bars

    @property
    def is_stage(self) -> bool:
        return self.total is None

    def counts(self) -> str:
        return f"{self.done}/{self.total} {self.unit}".rstrip()

    def start_line(self) -> str:
        if self.is_stage:
            return f"stage {self.name} started"
        return f"{self.name}: started, {self.total} {self.unit}".rstrip()

    def status_line(self, now: float) -> str:
        elapsed = now - self.start
        if self.is_stage:
            return f"stage {self.name} running, {duration(elapsed)} so far"
        line = f"{self.name}: {self.counts()}"
        if self.total:
            line += f" ({self.done / self.total:.0%})"
        line += f", {duration(elapsed)} elapsed"
        if 0 < self.done < (self.total or 0):
            line += f", ETA {duration(elapsed * (self.total - self.done) / self.done)}"
        return line

    def end_line(self, now: float) -> str:
        took = duration(now - self.start)
        return f"stage {self.name} done in {took}" if self.is_stage else f"{self.name}: done, {self.counts()} in {took}"


class _Bars:
    """Rich bars on a terminal console; finished items leave one log line (printed above the bars)."""

    def __init__(self, console):
        from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.text import Text

        class Counts(ProgressColumn):
            def render(self, task) -> Text:
                if task.total is None:
                    return Text("")
                unit = task.fields.get("unit", "")
                return Text(f"{int(task.completed)}/{int(task.total)} {unit}".rstrip(), style="progress.download")

        class Eta(ProgressColumn):
            def render(self, task) -> Text:
                left = task.time_remaining
                if task.total is None or left is None or task.finished:
                    return Text("")
                return Text(f"ETA {duration(left)}", style="progress.remaining")

        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), Counts(),
                                 TimeElapsedColumn(), Eta(), console=console, transient=True)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def add(self, item: _Item) -> None:
        item.row = self.progress.add_task(item.name, total=item.total, unit=item.unit)

    def update(self, item: _Item) -> None:
        self.progress.update(item.row, completed=item.done)

    def remove(self, item: _Item) -> None:
        self.progress.remove_task(item.row)


class _State:
    lock = threading.RLock()
    open: list[_Item] = []
    bars: _Bars | None = None
    deferred = False  # log display: announce after START_DELAY (the watcher thread), not at once
    last_line = 0.0  # when the last progress line was logged


def _emit(item: _Item, line: str, level: int = logging.INFO) -> None:
    item.last_line = _State.last_line = time.monotonic()
    log.log(level, line)


def _announce_open() -> None:
    """Announce every open item not announced yet, outermost first (before a nested line)."""
    for item in _State.open:
        if not item.announced:
            item.announced = True
            _emit(item, item.start_line(), logging.DEBUG if _State.bars else logging.INFO)


def _open(item: _Item) -> _Item:
    with _State.lock:
        _State.open.append(item)
        if _State.bars:
            _State.bars.add(item)
        if not _State.deferred:
            _announce_open()
    return item


def _close(item: _Item, ok: bool) -> None:
    with _State.lock:
        if item not in _State.open:
            return
        # items opened inside it and never finished (an exception went through them) go with it
        for inner in _State.open[_State.open.index(item):][::-1]:
            _State.open.remove(inner)
            if _State.bars:
                _State.bars.remove(inner)
        now = time.monotonic()
        if ok:
            _announce_open()  # what it ran inside is announced before it ends
            _emit(item, item.end_line(now))
        else:
            what = f"stage {item.name}" if item.is_stage else item.name
            _emit(item, f"{what} stopped after {duration(now - item.start)}", logging.DEBUG)


def _advance(item: _Item, n: int) -> None:
    with _State.lock:
        item.done += n
        if _State.bars:
            _State.bars.update(item)
            return
        if not item.total:
            return
        tenths = int(item.done / item.total / STEP)
        now = time.monotonic()
        if tenths > item.logged_tenths and now - item.last_line >= MIN_GAP and item.done < item.total:
            item.logged_tenths = tenths
            _announce_open()
            _emit(item, item.status_line(now))


def _watch(stop: threading.Event) -> None:
    """Log display: announce what has run for START_DELAY; a heartbeat of the innermost item."""
    while not stop.wait(0.2):
        with _State.lock:
            now = time.monotonic()
            if any(not i.announced and now - i.start >= START_DELAY for i in _State.open):
                _announce_open()
            if _State.open:
                inner = _State.open[-1]
                if inner.announced and now - max(inner.last_line, _State.last_line) >= HEARTBEAT:
                    _emit(inner, inner.status_line(now))


class Task:
    """A counted unit of work. ``advance(n)`` as units finish; it ends when closed (or with its ``with``)."""

    def __init__(self, description: str, total: int, unit: str = ""):
        self._item = _open(_Item(description, max(0, int(total)), unit))
        self._closed = False

    def advance(self, n: int = 1) -> None:
        if not self._closed:
            _advance(self._item, n)

    def complete(self) -> None:
        """Mark every unit done (work whose parts were not counted one by one)."""
        self.advance(max(0, self._item.total - self._item.done))

    def close(self, ok: bool = True) -> None:
        if not self._closed:
            self._closed = True
            _close(self._item, ok)

    def __enter__(self) -> "Task":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


def task(description: str, total: int, unit: str = "") -> Task:
    """A counted task: ``with progress.task("scoring", n, "records") as t: ... t.advance(k)``."""
    return Task(description, total, unit)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Announce a stage (data, pretrain, finetune, signals, attacks, metrics, report, …) and its end."""
    item = _open(_Item(name))
    ok = False
    try:
        yield
        ok = True
    finally:
        _close(item, ok)


def track(items: Iterable[T], description: str, total: int | None = None, unit: str = "",
          size: Callable[[T], int] | None = None) -> Iterator[T]:
    """Iterate, counting each item (or ``size(item)`` units) once the loop body has finished with it."""
    if total is None:
        items = list(items)
        total = sum(size(i) for i in items) if size else len(items)
    with Task(description, total, unit) as t:
        for item in items:
            yield item
            t.advance(size(item) if size else 1)


def reporter(description: str, total: int) -> Callable[[int], None]:
    """The engine's ``Reporter`` signature: a task that ends by itself once ``total`` units are done."""
    t = Task(description, total, "steps")

    def advance(n: int) -> None:
        t.advance(n)
        if t._item.done >= t._item.total:
            t.close()

    return advance


def reporter_with(extra: Callable[[str, int], Callable[[int], None]] | None):
    """:func:`reporter`, also feeding a caller's own reporter (``ftaudit.run(reporter=...)``) when given."""
    if extra is None or extra is reporter:
        return reporter

    def both(description: str, total: int) -> Callable[[int], None]:
        ours, theirs = reporter(description, total), extra(description, total)

        def advance(n: int) -> None:
            ours(n)
            theirs(n)

        return advance

    return both


def advance(n: int = 1) -> None:
    """Advance the innermost running task, if any (a hook for loops that do not hold their task)."""
    with _State.lock:
        tasks = [i for i in _State.open if not i.is_stage]
    if tasks:
        _advance(tasks[-1], n)


class _ConsoleHandler(logging.Handler):
    """Log records as lines on a rich console (printed above live bars)."""

    def __init__(self, console):
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        from rich.text import Text

        try:
            stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
            style = "dim" if record.levelno < logging.INFO else "" if record.levelno == logging.INFO else (
                "yellow" if record.levelno == logging.WARNING else "red")
            prefix = "" if record.levelno == logging.INFO else f"{record.levelname.lower()} "
            self.console.print(Text.assemble((stamp + " ", "dim"), (prefix + record.getMessage(), style)),
                               soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)


@contextmanager
def output(verbosity: int = 0, bars: bool | None = None, console=None, stream: TextIO | None = None) -> Iterator[None]:
    """Show progress while the block runs (what the CLI does; a notebook may too).

    ``verbosity``: -1 warnings only (``-q``), 0 stages and tasks, 1 also debug detail (``-v``).
    ``bars``: rich bars on ``console`` (stderr); None = when it is a terminal. Otherwise timestamped
    log lines on ``stream`` (stderr).
    """
    from rich.console import Console

    console = console or Console(stderr=True)
    root = logging.getLogger("ftaudit")
    use_bars = verbosity >= 0 and (console.is_terminal if bars is None else bars)
    if use_bars:
        handler: logging.Handler = _ConsoleHandler(console)
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    saved = (root.level, root.propagate, _State.bars, _State.deferred)
    root.addHandler(handler)
    root.setLevel(logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO)
    root.propagate = False  # one line per event, whatever the root logger has
    stop = threading.Event()
    watcher = None
    try:
        if use_bars:
            with _Bars(console) as b:
                _State.bars = b
                yield
        else:
            if verbosity >= 0:
                _State.deferred = True
                watcher = threading.Thread(target=_watch, args=(stop,), name="ftaudit-progress", daemon=True)
                watcher.start()
            yield
    finally:
        stop.set()
        if watcher is not None:
            watcher.join()
        with _State.lock:
            _State.open.clear()
        root.removeHandler(handler)
        root.level, root.propagate = saved[0], saved[1]
        _State.bars, _State.deferred = saved[2], saved[3]
