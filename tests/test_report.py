"""The HTML report of the smoke run: it builds without a single docutils error (every caption renders), opens on
the claims grid, and (in a real headless Chromium) shows the grid and a figure.

The browser check needs Debian's chromium and the playwright package (no browser download: it drives
/usr/bin/chromium); without them it is skipped, unless ``STEERLIMITS_REQUIRE_BROWSER=1`` (CI), which turns the skip
into a failure. It writes a screenshot of the report's first page beside the report (``report_first_page.png``), in a
temporary folder of its own (other tests compare the smoke run's results/ and figures/ file by file).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from pathlib import Path

import pytest
from smoke_workdir import snakemake

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_MISSING = (
    "chromium is not installed (apt-get install chromium)"
    if not CHROMIUM
    else "playwright is not installed"
    if importlib.util.find_spec("playwright") is None
    else None
)
REQUIRE = os.environ.get("STEERLIMITS_REQUIRE_BROWSER") == "1"
DOCUTILS_MESSAGE = re.compile(r"\((?:INFO|WARNING|ERROR|SEVERE)/\d\)|System Message", re.IGNORECASE)


@pytest.fixture(scope="module")
def report(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    # outside the smoke run's results/ and figures/: other tests compare those trees file by file
    out = tmp_path_factory.mktemp("report") / "report.html"
    res = snakemake(smoke_run, "--cores", "1", "--report", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res.stdout + res.stderr


def test_report_builds_without_docutils_errors(report: tuple[Path, str]) -> None:
    path, log = report
    messages = [line for line in log.splitlines() if DOCUTILS_MESSAGE.search(line)]
    assert not messages, "docutils messages while building the report:\n" + "\n".join(messages[:20])
    text = path.read_text(encoding="utf-8", errors="replace")
    assert "System Message" not in text and "claims-grid" in text  # the grid is the first page


@pytest.mark.skipif(
    BROWSER_MISSING is not None and not REQUIRE,
    reason=f"{BROWSER_MISSING} (STEERLIMITS_REQUIRE_BROWSER=1 fails instead)",
)
def test_report_renders_the_claims_grid_and_a_figure_in_chromium(report: tuple[Path, str]) -> None:
    assert BROWSER_MISSING is None, BROWSER_MISSING
    from playwright.sync_api import sync_playwright

    path, _ = report
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(path.as_uri())
        grid = page.locator("table.claims-grid").first
        grid.wait_for(state="visible", timeout=30_000)
        body = page.inner_text("body")
        assert "Paper A" in body and "Paper B" in body and grid.locator("tr").count() > 3
        # the page opens at the grid's first rows, and the grid is not squeezed into Snakemake's narrow text column
        box = page.evaluate(
            "(() => { const r = document.querySelector('table.claims-grid').getBoundingClientRect(); "
            "return [r.top, r.width]; })()"
        )
        assert box[0] >= 0 and box[1] > 700, f"claims grid at top {box[0]:.0f} px, {box[1]:.0f} px wide"
        shot = path.with_name("report_first_page.png")
        page.screenshot(path=str(shot), full_page=False)
        # a figure: the report embeds each PNG as base64; Chromium must decode the first one to a real image
        figure = re.search(r"iVBORw0KGgo[A-Za-z0-9+/=]+", path.read_text())
        assert figure, "no PNG figure embedded in the report"
        width = page.evaluate(
            """b64 => new Promise(done => { const i = new Image(); i.onload = () => done(i.naturalWidth);
                 i.onerror = () => done(0); i.src = "data:image/png;base64," + b64; document.body.appendChild(i); })""",
            figure.group(0),
        )
        browser.close()
    assert width > 100, "the embedded figure did not render"
