"""report.html in a real browser (headless Chromium through playwright): the page loads with
no error and no request, its charts are drawn, and the example grid shows decoded images."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anoncli.report.html import render_html
from anoncli.report.svg import PALETTE
from test_report_html import full_report

CHROMIUM = shutil.which("chromium", path=os.environ.get("PATH", "") + os.pathsep + "/usr/bin")
if CHROMIUM is None:
    pytest.skip("no Chromium to open report.html: apt-get install -y chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the driver ships with it; "
                               "the browser is Debian's: apt-get install -y chromium)")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
# The browser must not try to reach anything: the build network is closed.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}

# Geometry in page (document) pixels, which are the full-page screenshot's pixels at scale 1.
CHARTS_JS = """() => [...document.querySelectorAll('svg.chart')].map(svg => {
  const box = svg.getBoundingClientRect();
  const marks = [...svg.querySelectorAll('path.hist, rect.bar, circle.point')].map(m => {
    const b = m.getBBox(), r = m.getBoundingClientRect();
    return {width: b.width, height: b.height,
            inside: r.left >= box.left - 1 && r.right <= box.right + 1 && r.top >= box.top - 1 && r.bottom <= box.bottom + 1};
  });
  return {kind: svg.getAttribute('class'), x: box.left + scrollX, y: box.top + scrollY,
          width: box.width, height: box.height, marks};
})"""
IMAGES_JS = """() => [...document.querySelectorAll('.examples img')].map(img => {
  const box = img.getBoundingClientRect();
  return {alt: img.alt, complete: img.complete, naturalWidth: img.naturalWidth,
          x: box.left + scrollX, y: box.top + scrollY, width: box.width, height: box.height};
})"""


def cli(*args):
    return subprocess.run([sys.executable, "-m", "anoncli", *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def real_report(tmp_path_factory) -> Path:
    """report.html of the bundled examples, blurred, measured with dlib."""
    pytest.importorskip("dlib", reason="dlib is the reference evaluator: pip install 'anoncli[eval]'")
    tmp = tmp_path_factory.mktemp("browser")
    r = cli("anonymize", EXAMPLES, "-o", tmp / "anon", "--method", "blur", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("report", tmp / "anon", "--evaluator", "dlib", "--cache-dir", tmp / "cache", "-o", tmp / "report", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    return tmp / "report" / "report.html"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, html: Path):
    """The loaded page, and the problems seen while loading it: page errors, console errors,
    and any request other than the page itself and its data: URIs."""
    page = browser.new_page(viewport=VIEWPORT)
    problems = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("request", lambda q: q.url != html.as_uri() and not q.url.startswith("data:")
            and problems.append(f"request: {q.url}"))
    page.goto(html.as_uri(), wait_until="load")
    return page, problems


def assert_charts_drawn(charts: list[dict]) -> None:
    for chart in charts:
        assert chart["width"] > 100 and chart["height"] > 50, chart["kind"]
        drawn = [m for m in chart["marks"] if m["width"] > 0 and m["height"] > 0]
        assert drawn, f"{chart['kind']}: no mark with a non-zero size"
        assert all(m["inside"] for m in chart["marks"]), f"{chart['kind']}: a mark is drawn outside the chart"


def crop(shot: Image.Image, box: dict) -> np.ndarray:
    x, y = round(box["x"]), round(box["y"])
    return np.asarray(shot.crop((x, y, x + round(box["width"]), y + round(box["height"]))).convert("RGB"), dtype=np.int16)


def distinct_colours(pixels: np.ndarray) -> int:
    rgb = pixels.reshape(-1, 3).astype(np.int32)
    return len(np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2]))


def test_real_report_in_chromium(browser, real_report, tmp_path):
    page, problems = open_page(browser, real_report)
    charts, images = page.evaluate(CHARTS_JS), page.evaluate(IMAGES_JS)
    png = tmp_path / "report.png"
    page.screenshot(path=str(png), full_page=True)
    page.close()
    assert problems == []

    histograms = [c for c in charts if "histogram" in c["kind"]]
    assert histograms, "no distance histogram"
    assert_charts_drawn(charts)

    originals = [i for i in images if i["alt"].startswith("original:")]
    anonymized = [i for i in images if i["alt"].startswith("anonymized:")]
    assert len(originals) == len(anonymized) >= 3
    for img in images:
        assert img["complete"] and img["naturalWidth"] > 0, f"{img['alt']} did not decode"
        assert img["width"] > 50 and img["height"] > 50, img["alt"]

    with Image.open(png) as shot:
        shot.load()
    assert shot.width == VIEWPORT["width"] and shot.height > VIEWPORT["height"]
    for img in images:
        pixels = crop(shot, img)
        std, colours = float(pixels.std()), distinct_colours(pixels)
        assert std > 10 and colours > 64, f"{img['alt']} is painted flat: std {std:.1f}, {colours} colours"
    for original, anon in zip(originals, anonymized):
        diff = float(np.abs(crop(shot, original) - crop(shot, anon)).mean())
        assert diff > 1, f"{anon['alt']} shows the original (mean difference {diff:.2f})"
    # The first series' colour (the anonymized distances) is painted in each histogram.
    series_rgb = np.array([int(PALETTE[0][i:i + 2], 16) for i in (1, 3, 5)])
    for chart in histograms:
        painted = int((np.abs(crop(shot, chart) - series_rgb).sum(axis=2) < 60).sum())
        assert painted > 200, f"the anonymized histogram is not painted ({painted} pixels of its colour)"


def test_every_chart_kind_in_chromium(browser, tmp_path):
    """Histograms, fairness bars and the comparison scatter, from the synthetic full report."""
    html = tmp_path / "report.html"
    html.write_text(render_html(full_report()), encoding="utf-8")
    page, problems = open_page(browser, html)
    charts = page.evaluate(CHARTS_JS)
    page.close()
    assert [c["kind"].split()[-1] for c in charts] == ["histogram", "histogram", "bars", "bars", "scatter"]
    assert_charts_drawn(charts)
    # The fixture's deliberately damaged data URIs may be reported as failed loads; nothing else may be.
    assert [p for p in problems if "Failed to load resource" not in p] == []
