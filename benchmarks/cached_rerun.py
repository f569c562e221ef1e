"""Cache miss vs hit: the default ``ftaudit run`` twice on a fresh store, wall time of each.

    python benchmarks/cached_rerun.py [extra `ftaudit run` arguments]

The second run trains nothing (models, signals and bootstrap summaries come from the
content-addressed caches) but still writes a full new run: results, arrays, report, rows.
Prints both wall times and ``ratio: X``. One measurement, not a timed test.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_run(store: Path, extra: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ftaudit", "run", "-q", "--out", str(store), *extra],
                   check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    newest = max((store / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    return seconds, json.loads((newest / "results.json").read_text())


def main() -> None:
    extra = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        miss, first = timed_run(store, extra)
        hit, second = timed_run(store, extra)
    for name, seconds, res in (("first run (cache miss)", miss, first), ("rerun (cache hit)", hit, second)):
        print(f"{name:>24}: {seconds:6.2f} s wall  models trained {res['cache']['models_trained']:>3}, "
              f"from cache {res['cache']['models_loaded']:>3}")
    same = first["attacks"] == second["attacks"]
    print(f"identical metrics: {same}")
    print(f"ratio: {miss / hit:.2f}")


if __name__ == "__main__":
    main()
