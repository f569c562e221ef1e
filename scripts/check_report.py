"""Render ftaudit reports in real headless Chromium and check what a reader sees.

    python scripts/check_report.py RUN_DIR_OR_REPORT.html [...] [--screens DIR] [--widths 700 1400]

Per report and viewport width it asserts that
  - the document does not overflow horizontally (scrollWidth <= clientWidth; wide tables scroll
    inside their own box instead),
  - every <img> loaded (naturalWidth > 0) and the page fetched nothing but itself (self-contained),
  - the ROC legend lies outside the plot area: the report's ROC <img> carries the axes and legend
    boxes matplotlib drew (data-axes-box / data-legend-box, fractions of the image), and the two
    boxes must not overlap and must both lie inside the image.
Exit status 0 when every check passes, 1 otherwise (one line per failure), 2 when no browser.

Chromium comes from the system (Debian: ``apt-get install -y chromium``) through playwright
(``pip install playwright``); playwright never downloads a browser here. Set FTAUDIT_CHROMIUM to
use another binary.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
NARROW = 700  # the width at which nothing may overflow
WIDTHS = (NARROW, 1400)

_PAGE_FACTS = """() => {
  const doc = document.documentElement;
  const imgs = [...document.images].map(img => ({
    alt: img.alt, complete: img.complete, natural: img.naturalWidth,
    rect: (r => [r.left, r.top, r.width, r.height])(img.getBoundingClientRect()),
    axes: img.dataset.axesBox || null, legend: img.dataset.legendBox || null, id: img.id}));
  const wide = [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > doc.clientWidth + 1 && !e.closest('.scroll, pre'))
    .slice(0, 5).map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : ''));
  return {scrollWidth: doc.scrollWidth, clientWidth: doc.clientWidth, imgs, wide};
}"""


def chromium_path() -> str | None:
    """The Chromium binary to drive, or None when there is none."""
    for candidate in (os.environ.get("FTAUDIT_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _box(text: str | None) -> list[float] | None:
    try:
        box = [float(v) for v in json.loads(text)] if text else None
    except (TypeError, ValueError):
        return None
    return box if box and len(box) == 4 else None


def _overlap(a: list[float], b: list[float]) -> bool:
    """Boxes [x0, y0, x1, y1] share area (touching edges do not count)."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def check_facts(facts: dict, width: int, roc_required: bool = True) -> list[str]:
    """Failures of one rendered page, from the facts the browser reported."""
    problems = []
    if width <= NARROW and facts["scrollWidth"] > facts["clientWidth"]:
        problems.append(f"horizontal overflow at {width} px: the document is {facts['scrollWidth']} px wide "
                        f"(viewport {facts['clientWidth']} px); too wide: {', '.join(facts['wide']) or '?'}")
    for img in facts["imgs"]:
        if not img["complete"] or img["natural"] <= 0:
            problems.append(f"image {img['alt']!r} did not load")
    roc = [img for img in facts["imgs"] if img["id"] == "roc-figure"]
    if not roc:
        if roc_required:
            problems.append("no ROC figure (img#roc-figure) on the page")
        return problems
    axes, legend = _box(roc[0]["axes"]), _box(roc[0]["legend"])
    if axes is None or legend is None:
        problems.append("the ROC image carries no data-axes-box / data-legend-box")
    else:
        if _overlap(axes, legend):
            problems.append(f"the ROC legend {legend} overlaps the plot area {axes}")
        for name, box in (("axes", axes), ("legend", legend)):
            if min(box) < -1e-6 or max(box) > 1 + 1e-6:
                problems.append(f"the ROC {name} box {box} reaches outside the image")
    if roc[0]["rect"][2] <= 0:
        problems.append("the ROC figure is drawn zero pixels wide")
    return problems


def _report_path(path: Path) -> Path:
    return path / "report.html" if path.is_dir() else path


def check_reports(paths: list[Path], widths=WIDTHS, screens: Path | None = None) -> dict[str, list[str]]:
    """Open every report at every width in one headless Chromium; failures per report."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise FileNotFoundError("no chromium binary (apt-get install -y chromium, or set FTAUDIT_CHROMIUM)")
    out: dict[str, list[str]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            for path in paths:
                report = _report_path(path).resolve()
                problems = out.setdefault(str(path), [])
                if not report.is_file():
                    problems.append(f"{report}: no such report")
                    continue
                for width in widths:
                    problems += [f"{width} px: {p}" for p in _check_one(browser, report, width, screens)]
        finally:
            browser.close()
    return out


def _check_one(browser, report: Path, width: int, screens: Path | None) -> list[str]:
    page = browser.new_page(viewport={"width": width, "height": 900})
    fetched: list[str] = []

    def route(r):  # the report must need nothing but itself: refuse (and record) any other request
        url = r.request.url
        if url.startswith(("data:", report.as_uri())):
            return r.continue_()
        fetched.append(url)
        return r.abort()

    try:
        page.route("**/*", route)
        page.goto(report.as_uri(), wait_until="load")
        facts = page.evaluate(_PAGE_FACTS)
        if screens is not None:
            screens.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screens / f"{report.parent.name}-{width}.png"), full_page=True)
    finally:
        page.close()
    return check_facts(facts, width) + [f"the page requested {u} (not self-contained)" for u in fetched]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="run directories or report.html files")
    parser.add_argument("--screens", type=Path, help="write full-page screenshots <run>-<width>.png here")
    parser.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS))
    args = parser.parse_args(argv)
    try:
        results = check_reports(args.reports, args.widths, args.screens)
    except (ImportError, FileNotFoundError) as exc:
        print(f"check_report: cannot start the browser: {exc}", file=sys.stderr)
        return 2
    failed = False
    for report, problems in results.items():
        for p in problems:
            print(f"{report}: {p}")
        failed |= bool(problems)
        if not problems:
            print(f"{report}: ok ({', '.join(f'{w} px' for w in args.widths)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
