"""Run claims: each claim's study with its preset through the ordinary pipeline (so every model and
signal is cached and a killed run resumes), then read the claim's difference from the stored run
and judge it. Claims that share a study and preset share one run."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Sequence

from ftaudit.reproduce.claims import Claim, Measured
from ftaudit.reproduce.verdict import REVERSED, verdict


@dataclass(frozen=True)
class Row:
    """One line of the verdict table."""

    claim: Claim
    verdict: str
    measured: Measured | None
    run_id: str | None
    seconds: float          # the run's wall time (the pipeline's total; 0 when shared with an earlier claim)
    load: tuple[float, float]  # 1-minute load average before and after the run
    error: str = ""

    def to_dict(self) -> dict:
        c, m = self.claim, self.measured
        return {"claim": c.name, "source": c.source, "statement": c.claim, "paper": c.paper, "study": c.study,
                "preset": c.preset, "difference": c.difference, "direction": c.direction, "bound": c.bound,
                "invariant": c.invariant, "verdict": self.verdict, "ours": m.ours if m else "",
                "measured": m.diff_text if m else "", "note": (m.note if m else "") or self.error,
                "value": m.diff.value if m else None, "lo": m.diff.lo if m else None, "hi": m.diff.hi if m else None,
                "run_id": self.run_id, "seconds": self.seconds, "load": list(self.load), "command": c.command()}


def _violation(exc: BaseException) -> bool:
    return type(exc).__name__ == "EpsilonViolation"


def run_claims(claims: Sequence[Claim], out: str, overrides: Sequence[str] = (),
               overrides_by_study: dict[str, list[str]] | None = None, reporter=None) -> list[Row]:
    """Run each claim's study (once per study and preset) and judge the claim. ``overrides`` apply to
    every claim's config (over its preset), ``overrides_by_study`` to one study's (tests use them to
    shrink runs)."""
    from ftaudit.config_build import build_config
    from ftaudit.pipeline import run_pipeline

    configs = {}
    for c in claims:  # every config checked before any work
        extra = list((overrides_by_study or {}).get(c.study, [])) + list(overrides) + [f"out={out}"]
        configs[c.name] = build_config(c.study, None, extra, preset=c.preset)
    done: dict[tuple, tuple] = {}
    rows = []
    for c in claims:
        cfg = configs[c.name]
        key = (c.study, cfg.model_dump_json())
        before = os.getloadavg()[0]
        if key not in done:
            start = time.perf_counter()
            try:
                result = run_pipeline(cfg, reporter)
                done[key] = (result, None, time.perf_counter() - start)
            except Exception as exc:  # noqa: BLE001 — only a DP audit's violation is a verdict; others re-raise
                if not _violation(exc):
                    raise
                done[key] = (None, exc, time.perf_counter() - start)
            seconds = done[key][2]
        else:
            seconds = 0.0
        result, exc, _ = done[key]
        load = (before, os.getloadavg()[0])
        if exc is not None:
            rows.append(Row(c, REVERSED if c.invariant else "not measured", None, None, seconds, load, error=str(exc)))
            continue
        measured = c.extract(result.results, result.path)
        rows.append(Row(c, verdict(measured.diff, c.direction, c.bound, c.invariant), measured, result.run_id, seconds,
                        load))
    return rows
