"""Progress: timestamped log lines while each stage runs when stderr is not a terminal, rich bars on
one, nothing from the library unless asked; -q silences, -v adds debug lines."""
import io
import logging
import re
import subprocess
import sys
import time

import pytest
from rich.console import Console

from ftaudit import progress

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) ftaudit[.\w]*: ")
STAGE = re.compile(r"ftaudit\.progress: stage (\S+) (started|done in)")


def _run_cli(tmp_path, tiny_overrides, *flags):
    """Run `ftaudit run` with stdout and stderr to one pipe; every line with whether the process was
    still running when the line was read."""
    cmd = [sys.executable, "-m", "ftaudit", "run", *flags] + [a for o in tiny_overrides for a in ("--set", o)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    for line in iter(proc.stdout.readline, ""):
        lines.append((line.rstrip("\n"), proc.poll() is None))
    assert proc.wait(timeout=600) == 0, "\n".join(text for text, _ in lines)
    return lines


def test_cli_logs_each_stage_as_it_happens_and_q_v(tmp_path, tiny_overrides):
    lines = _run_cli(tmp_path, tiny_overrides)
    logged = [(text, running) for text, running in lines if LOG_LINE.match(text)]
    stages = [(m.group(1), running) for text, running in logged if (m := STAGE.search(text))]
    assert stages, "\n".join(t for t, _ in lines)
    # the first stage line is read while the run goes on (the report alone takes seconds after it)
    assert stages[0][1], "the first stage line arrived only after the process had exited"
    seen = {name for name, _ in stages}
    assert {"data", "pretrain", "finetune", "signals", "attacks", "metrics", "report"} <= seen, seen
    assert any("training fine-tune" in t and "done" in t for t, _ in logged)
    assert any("computing signals" in t for t, _ in logged)
    # log lines come before the results table and are not DEBUG by default
    first_table_line = next(i for i, (t, _) in enumerate(lines) if t.startswith("run "))
    assert all(i < first_table_line for i, (t, _) in enumerate(lines) if LOG_LINE.match(t))
    assert not any(" DEBUG " in t for t, _ in logged)

    # -v: debug detail too (a rerun: every model comes from the cache, and says so)
    verbose = [t for t, _ in _run_cli(tmp_path, tiny_overrides, "-v")]
    assert any(LOG_LINE.match(t) and " DEBUG " in t and "models cached" in t for t in verbose), "\n".join(verbose)
    assert any(STAGE.search(t) for t in verbose)

    # -q: no log line at all, the results still printed
    quiet = [t for t, _ in _run_cli(tmp_path, tiny_overrides, "-q")]
    assert not any(LOG_LINE.match(t) for t in quiet), "\n".join(quiet)
    assert any(t.startswith("report: ") for t in quiet)


@pytest.fixture
def log_output(monkeypatch):
    """progress.output() with log lines into a buffer, announcements and 10 % lines without delays."""
    monkeypatch.setattr(progress, "MIN_GAP", 0.0)
    buf = io.StringIO()

    def lines():
        return [line for line in buf.getvalue().splitlines() if line]

    return buf, lines


def test_log_display_announces_counts_and_ends(log_output, monkeypatch):
    buf, lines = log_output
    monkeypatch.setattr(progress, "START_DELAY", 0.0)
    with progress.output(0, bars=False, stream=buf):
        with progress.stage("signals"):
            with progress.task("computing signals", 20, "entries") as task:
                for _ in range(20):
                    task.advance()
    text = lines()
    assert all(LOG_LINE.match(line) for line in text), text
    assert "stage signals started" in text[0]
    assert "computing signals: started, 20 entries" in text[1]
    periodic = [line for line in text if "computing signals: " in line and "%" in line]
    assert len(periodic) == 9 and "(50%)" in periodic[4] and "ETA" in periodic[4]
    assert "computing signals: done, 20/20 entries in" in text[-2]
    assert "stage signals done in" in text[-1]


def test_log_display_short_stage_is_one_line_and_a_failure_stays_quiet(log_output):
    buf, lines = log_output
    with progress.output(0, bars=False, stream=buf):
        with progress.stage("data"):
            pass
        with pytest.raises(ValueError):
            with progress.stage("pretrain"):
                raise ValueError("bad input")  # the CLI prints the error itself, as its only line
    text = lines()
    assert len(text) == 1 and "stage data done in" in text[0]


def test_log_display_announces_a_long_stage_while_it_runs(log_output, monkeypatch):
    buf, lines = log_output
    monkeypatch.setattr(progress, "START_DELAY", 0.05)
    monkeypatch.setattr(progress, "HEARTBEAT", 0.05)
    with progress.output(0, bars=False, stream=buf):
        with progress.stage("finetune"):
            deadline = time.monotonic() + 30
            while not any("running" in line for line in lines()) and time.monotonic() < deadline:
                time.sleep(0.01)
            during = lines()
    assert "stage finetune started" in during[0] and "stage finetune running" in during[1], during
    assert "stage finetune done in" in lines()[-1]


def test_verbosity_levels(log_output):
    buf, lines = log_output
    with progress.output(-1, bars=False, stream=buf):
        with progress.stage("data"):
            progress.log.debug("detail")
        logging.getLogger("ftaudit.store").warning("a warning still shows")
    assert len(lines()) == 1 and "WARNING ftaudit.store: a warning still shows" in lines()[0]
    with progress.output(1, bars=False, stream=buf):
        progress.log.debug("detail")
    assert "DEBUG ftaudit.progress: detail" in lines()[-1]


def test_bars_on_a_terminal_leave_one_line_per_finished_item():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with progress.output(0, console=console):
        with progress.stage("finetune"):
            advance = progress.reporter("training fine-tune (4 models)", 8)
            for _ in range(8):
                advance(1)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "training fine-tune (4 models): done, 8/8 steps in" in text
    assert "stage finetune done in" in text
    assert "8/8 steps" in text


def test_library_prints_nothing_unless_asked(capfd):
    """Without output() (the API), progress only reaches the `ftaudit` logger, which has a NullHandler."""
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("ftaudit").handlers)
    with progress.stage("data"):
        for _ in progress.track(range(5), "scoring records", unit="records"):
            pass
        progress.reporter("training", 2)(2)
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_a_caller_reporter_is_fed_too():
    got = []

    def mine(description, total):
        got.append((description, total))
        return lambda n: got.append(n)

    advance = progress.reporter_with(mine)("training x", 3)
    advance(1)
    advance(2)
    assert got == [("training x", 3), 1, 2]
    assert progress.reporter_with(None) is progress.reporter
