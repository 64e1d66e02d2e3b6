"""The report page opened from disk in a real headless Chromium: it renders, loads nothing
from outside the run folder, and every plot shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_support import make_run
from test_review_browser import CHROMIUM_ARGS, chromium_path
from typer.testing import CliRunner

from instructgen.cli import app

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def report(tmp_path_factory, test_data) -> Path:
    run = make_run(test_data, tmp_path_factory.mktemp("browser") / "run", random_weights=True)
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    return run / "report.html"


def test_the_page_opens_from_disk_reads_only_itself_and_shows_every_plot(report, tmp_path):
    from playwright.sync_api import sync_playwright

    requested, failed, errors = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("request", lambda r: requested.append(r.url))
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(report.as_uri())
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        plots = page.locator("figure svg")
        sizes = [plots.nth(i).bounding_box() for i in range(plots.count())]
        sections = page.locator("section h2").all_inner_texts()
        banner = page.locator("#random-weights").inner_text()
        browser.close()
    assert requested == [report.as_uri()]  # the page itself, nothing else, nothing remote
    assert failed == [] and errors == []
    assert len(sizes) == 3 and all(box["width"] > 300 and box["height"] > 150 for box in sizes)
    assert sections == ["Data", "Cost", "Training", "Evaluation", "Settings"]
    assert "random weights" in banner
    assert shot.stat().st_size > 50_000  # a full page, not a blank one
