"""The report's HTML page and SVG charts: well-formed, self-contained, escaped, robust to gaps."""
from __future__ import annotations

import math
import re
from html.parser import HTMLParser

import pytest

from anoncli.report.html import render_html
from anoncli.report.svg import (
    SVG_NS,
    bars_svg,
    format_tick,
    histogram_svg,
    nice_ticks,
    scatter_svg,
)

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
MALICIOUS = "<script>alert(1)</script>"
PIXEL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


class Tree(HTMLParser):
    """Checks nesting (every non-void element closed, in order) and records elements."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.elements: list[tuple[str, dict, tuple[str, ...]]] = []   # (tag, attrs, ancestors)
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs), tuple(self.stack)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs), tuple(self.stack)))

    def handle_endtag(self, tag):
        if tag in VOID:
            self.errors.append(f"end tag for void element {tag}")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)

    def of(self, tag, inside=None, cls=None):
        return [a for t, a, anc in self.elements
                if t == tag and (inside is None or inside in anc)
                and (cls is None or cls in (a.get("class") or "").split())]


def parse(html: str) -> Tree:
    tree = Tree()
    tree.feed(html)
    tree.close()
    assert tree.errors == []
    assert tree.stack == [], f"unclosed: {tree.stack}"
    return tree


def svgs(html: str) -> list[str]:
    return re.findall(r"<svg\b.*?</svg>", html, flags=re.S)


def full_report() -> dict:
    evaluators = [
        {"name": "arcface", "version": "r100", "weights_sha256": "ab" * 32, "white_box": True,
         "thresholds": {"literature": 0.68, "far_1e-3": 0.72}, "verification": {"auc": 0.997, "pairs": 6000},
         "available": True, "reason": None},
        {"name": MALICIOUS, "version": "1.0", "weights_sha256": None, "white_box": False,
         "thresholds": {"literature": 0.6, "far_1e-3": None}, "verification": None, "available": True, "reason": None},
        {"name": "facenet", "version": "?", "weights_sha256": None, "white_box": False,
         "thresholds": {"literature": None, "far_1e-3": None}, "verification": None,
         "available": False, "reason": "weights missing"},
    ]
    privacy = {
        "arcface": {"protection_rate": {"literature": 0.973, "far_1e-3": 0.95}, "pairs": 120,
                    "distances": {"anonymized": [0.8 + 0.001 * i for i in range(100)] + [float("nan"), None],
                                  "genuine": [0.3 + 0.002 * i for i in range(50)],
                                  "impostor": [0.9 + 0.001 * i for i in range(200)]},
                    "identification": {"rank1": 0.02, "rank5": 0.05, "rank1_farthest": 0.0377, "rank5_farthest": 0.06, "baseline_rank1": 0.98, "baseline_rank5": 1.0,
                                       "chance_rank1": 0.0123, "chance_rank5": 0.0456, "identities": 40,
                                       "probes": 100, "gallery": 400}},
        MALICIOUS: {"protection_rate": {"literature": 0.5, "far_1e-3": None}, "pairs": 3,
                    "distances": {"anonymized": [0.7], "genuine": [], "impostor": []}, "identification": None},
    }
    return {
        "tool_version": "0.1.0", "created": "2024-05-01T12:00:00+00:00",
        "anon_dir": "/data/anon", "original_dir": "/data/orig", "restored_dir": "/data/restored",
        "run": {"method": "pixelate", "params": {"block": 16, "nested": {"a": [1, 2]}, MALICIOUS: MALICIOUS},
                "run_id": "run-42"},
        "counts": {"images": 100, "faces": 120, "matched": 118},
        "evaluators": evaluators,
        "privacy": privacy,
        "utility": {"detection_rate": {"detector": "retinaface", "anonymized": 0.12, "original": 0.99, "n": 120},
                    "landmarks": {"nme_mean": 0.052, "nme_median": 0.041, "n": 110, "available": True, "reason": None},
                    "ssim": {"face": 0.612, "outside": 0.9987}, "psnr": {"face": 21.34, "outside": 48.2},
                    "lpips": {"available": True, "value": 0.213, "reason": None},
                    "fid": {"available": False, "value": None, "reason": "torch-fidelity not installed"}},
        "recovery": {"psnr": 51.2, "ssim": 0.999, "mae": 0.21, "identity_distance": {"arcface": 0.01}, "n": 100,
                     "wrong_key": {"psnr": 18.0, "ssim": 0.4, "mae": 30.0, "identity_distance": {"arcface": 0.9},
                                   "n": 100}},
        "fairness": {
            "gender": {"groups": {"female": {"n": 60, "detection_rate": 0.1, "protection_rate": 0.97},
                                  "male": {"n": 60, "detection_rate": 0.14, "protection_rate": 0.96}},
                       "gaps": {"detection_rate": {"max_min": 0.04, "mean_pairwise": 0.04, "log_ratio": 0.34, "std": 0.02},
                                "protection_rate": {"max_min": 0.01, "mean_pairwise": 0.01, "log_ratio": None, "std": 0.005}}},
            "age": {"groups": {"young": {"n": 80, "detection_rate": 0.1, "protection_rate": None},
                               MALICIOUS: {"n": 40, "detection_rate": 0.2, "protection_rate": 0.9}},
                    "gaps": {}},
        },
        "examples": [{"input": "a/000149.jpg", "original": PIXEL, "anonymized": PIXEL + "A", "restored": PIXEL + "B"},
                     {"input": MALICIOUS, "original": PIXEL + "C", "anonymized": PIXEL + "D", "restored": None}],
        "compare": [{"label": "pixelate-16", "method": "pixelate", "protection_rate": 0.97, "ssim_face": 0.61,
                     "psnr_face": 21.3, "detection_rate": 0.12},
                    {"label": "blur", "method": "gaussian", "protection_rate": 0.55, "ssim_face": 0.85,
                     "psnr_face": 28.0, "detection_rate": 0.8},
                    {"label": "broken", "method": "x", "protection_rate": None, "ssim_face": 0.5,
                     "psnr_face": None, "detection_rate": None}],
    }


def test_full_report_structure():
    html = render_html(full_report())
    assert html.startswith("<!DOCTYPE html>")
    tree = parse(html)

    # Sections in the documented order.
    ids = [a["id"] for a in tree.of("section")]
    assert ids == ["evaluators", "privacy", "utility", "recovery", "fairness", "compare", "examples"]

    # 2 distance histograms + 2 fairness bar charts + 1 scatter.
    assert len(tree.of("svg")) == 5 == len(svgs(html))
    hist = [s for s in svgs(html) if "chart histogram" in s]
    assert len(hist) == 2
    first = parse(hist[0])
    assert len(first.of("path", cls="hist")) == 3           # anonymized, genuine, impostor
    assert len(first.of("line", cls="threshold")) == 2      # literature, FAR
    second = parse(hist[1])
    assert len(second.of("path", cls="hist")) == 1          # only "anonymized" has values
    assert len(second.of("line", cls="threshold")) == 1     # the FAR threshold is None
    bars = [parse(s) for s in svgs(html) if "chart bars" in s]
    assert [len(b.of("rect", cls="bar")) for b in bars] == [4, 3]   # age: one protection rate missing
    scatter = [parse(s) for s in svgs(html) if "chart scatter" in s]
    assert len(scatter) == 1 and len(scatter[0].of("circle", cls="point")) == 2   # "broken" has no y
    for svg in tree.of("svg"):
        assert svg["xmlns"] == SVG_NS

    # Example grid: 3 columns, every data URI as an <img>, a placeholder for the missing restore.
    grid = tree.of("div", cls="examples")
    assert len(grid) == 1 and "cols-3" in grid[0]["class"]
    srcs = [a["src"] for a in tree.of("img")]
    ex = full_report()["examples"]
    assert srcs == [ex[0]["original"], ex[0]["anonymized"], ex[0]["restored"], ex[1]["original"], ex[1]["anonymized"]]
    assert html.count('class="missing"') == 1

    text = "".join(tree.text)
    assert "97.3 %" in text and "95.0 %" in text          # protection rates
    assert "Rank-1 chance" in text and "1.2 %" in text and "4.6 %" in text   # the random-ranking floor
    assert "Rank-1 farthest first" in text and "3.8 %" in text   # the ranking of an attacker who knows identities are turned away
    assert "white-box" in text and len(tree.of("span", cls="white-box")) == 3   # evaluators, privacy, identification
    assert "weights missing" in text and "torch-fidelity not installed" in text
    assert "21.34 dB" in text and "0.612" in text
    assert "Wrong key" in text
    assert "could not be rendered" not in html


def test_self_contained_and_escaped():
    html = render_html(full_report())
    assert "<script" not in html.lower()
    assert MALICIOUS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    urls = re.findall(r"https?://[^\s\"'<>]*", html)
    assert urls and set(urls) == {SVG_NS}
    assert "<link" not in html and "@import" not in html and "url(" not in html
    # The escaped name still reads as text once parsed.
    assert MALICIOUS in "".join(parse(html).text)


def test_refuses_non_data_image_sources():
    report = {"examples": [{"input": "x", "original": "https://example.com/a.jpg", "anonymized": "file:///etc/passwd",
                            "restored": None}]}
    html = render_html(report)
    tree = parse(html)
    assert tree.of("img") == []
    assert "example.com" not in html and "/etc/passwd" not in html
    assert "cols-2" in tree.of("div", cls="examples")[0]["class"]


@pytest.mark.parametrize("report", [
    {},
    None,
    {"tool_version": "0.1.0", "run": {"method": "blur"}, "evaluators": [], "privacy": {}, "utility": None,
     "recovery": None, "fairness": None, "examples": [], "compare": None},
])
def test_nearly_empty_report(report):
    html = render_html(report)
    tree = parse(html)
    ids = [a["id"] for a in tree.of("section")]
    assert ids == ["evaluators", "privacy", "utility"]     # optional sections left out
    assert tree.of("svg") == [] and tree.of("img") == []
    assert "could not be rendered" not in html
    assert re.findall(r"https?://", html) == []


def test_wrong_types_never_raise():
    report = {
        "tool_version": 3, "created": None, "run": "oops", "counts": [1, 2], "evaluators": ["x", None, {"name": None}],
        "privacy": {"e": None, "f": {"protection_rate": 7, "distances": {"anonymized": "abc", "genuine": [None, "1"],
                                                                       "impostor": [float("inf")]}}},
        "utility": {"detection_rate": 1.0, "ssim": {"face": "high"}, "lpips": {"available": False}},
        "recovery": {"identity_distance": [1, 2], "wrong_key": "nope"},
        "fairness": {"g": {"groups": {"a": None, "b": {"n": "many", "detection_rate": True}}, "gaps": {"x": None}}},
        "examples": [None, {"original": 5}],
        "compare": [None, {"label": None, "ssim_face": "x"}],
    }
    html = render_html(report)
    tree = parse(html)
    # Histograms for both privacy entries and the fairness chart render as "no data" placeholders.
    assert len(tree.of("svg")) == 4
    assert "no data" in "".join(tree.text)


def test_random_damage_is_rendered_not_failed():
    """Keys dropped or replaced by junk anywhere: every section still renders on its own."""
    import random

    junk = [None, 1, -3.5, float("nan"), float("inf"), "s", "<b>", [], {}, [1, None], {"x": 1}, True, (1, 2),
            {"a": {"b": None}}]

    def damage(obj, rng):
        if isinstance(obj, dict):
            out = {}
            for k, v in obj.items():
                r = rng.random()
                if r < 0.1:
                    continue
                out[k] = rng.choice(junk) if r < 0.2 else damage(v, rng)
            return out
        if isinstance(obj, list):
            return [rng.choice(junk) if rng.random() < 0.1 else damage(v, rng) for v in obj]
        return obj

    rng = random.Random(1234)
    base = full_report()
    for _ in range(150):
        html = render_html(damage(base, rng))
        parse(html)
        assert "could not be rendered" not in html


def test_section_failure_is_contained(monkeypatch):
    import anoncli.report.html as module

    def boom(r):
        raise ValueError("bad")

    sections = tuple((sid, title, boom if sid == "utility" else fn) for sid, title, fn in module.SECTIONS)
    monkeypatch.setattr(module, "SECTIONS", sections)
    html = module.render_html(full_report())
    parse(html)
    assert "The utility section could not be rendered (ValueError)." in html
    assert 'id="privacy"' in html and 'id="examples"' in html


# -- SVG helpers ------------------------------------------------------------------------------

@pytest.mark.parametrize("lo, hi, expected", [
    (0, 1, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (0, 100, [0, 20, 40, 60, 80, 100]),
    (0, 10, [0, 2, 4, 6, 8, 10]),
    (0, 7, [0, 2, 4, 6, 8]),
    (0.3, 0.9, [0.2, 0.4, 0.6, 0.8, 1.0]),
    (-1, 1, [-1.0, -0.5, 0.0, 0.5, 1.0]),
    (0, 0.001, [0.0, 0.0002, 0.0004, 0.0006, 0.0008, 0.001]),
    (0, 1.25, [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]),
    (1, 0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
])
def test_nice_ticks_closed_forms(lo, hi, expected):
    assert nice_ticks(lo, hi) == expected


def test_nice_ticks_degenerate():
    ticks = nice_ticks(5, 5)
    assert len(ticks) >= 2 and ticks[0] < 5 < ticks[-1] and 5.0 in ticks
    assert nice_ticks(0, 0) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert nice_ticks(float("nan"), 1) == []
    assert nice_ticks(None, 1) == []
    assert nice_ticks(-1e308, 1e308) == []


def test_format_tick():
    ticks = nice_ticks(0, 1)
    assert [format_tick(t, ticks) for t in ticks] == ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    ticks = nice_ticks(0, 1.25)
    assert format_tick(0.25, ticks) == "0.25"
    ticks = nice_ticks(0, 100)
    assert [format_tick(t, ticks) for t in ticks] == ["0", "20", "40", "60", "80", "100"]
    assert format_tick(-0.0, [-1.0, 0.0, 1.0]) == "0"
    ticks = nice_ticks(1e6, 3.5e6)
    assert [format_tick(t, ticks) for t in ticks[:2]] == ["1.0e+06", "1.5e+06"]
    ticks = nice_ticks(0.123456, 0.123457)     # labels of a tiny range stay distinct
    assert len({format_tick(t, ticks) for t in ticks}) == len(ticks)


def test_chart_placeholders_and_degenerate_inputs():
    for svg in (histogram_svg({}, 10, "t", "x", None), histogram_svg({"a": [None, float("nan")]}, 10, "t", "x", {"th": 0.5}),
                scatter_svg([], "t", "x", "y"), scatter_svg([{"label": "a", "x": None, "y": 1}], "t", "x", "y"),
                bars_svg({}, "t", "y"), bars_svg({"g": {"m": None}}, "t", "y")):
        tree = parse(svg)
        assert len(tree.of("svg")) == 1 and "no data" in "".join(tree.text)

    # One value, equal min and max: still a histogram with a visible bar, ticks around the value.
    tree = parse(histogram_svg({"a": [0.5, 0.5, 0.5]}, 20, "one", "x", {"t": 0.5}))
    assert len(tree.of("path", cls="hist")) == 1 and len(tree.of("line", cls="threshold")) == 1
    labels = [t for t in tree.text if re.fullmatch(r"-?[0-9.]+", t)]
    assert "0.50" in labels and "0.44" in labels and "0.56" in labels
    tree = parse(scatter_svg([{"label": "only", "x": 0.5, "y": 0.5}], "one", "x", "y"))
    assert len(tree.of("circle", cls="point")) == 1
    tree = parse(bars_svg({"g": {"m": 0.0}}, "zero", "y"))
    assert len(tree.of("rect", cls="bar")) == 1


def test_chart_geometry_stays_inside_viewbox():
    svg = histogram_svg({"a": [0.1, 0.2, 0.2, 0.9], "b": [0.5]}, 8, "h", "x", {"far": 1.4, "lit": -0.2})
    tree = parse(svg)
    root = tree.of("svg")[0]
    w, h = float(root["width"]), float(root["height"])
    for line in tree.of("line", cls="threshold"):
        assert 0 <= float(line["x1"]) <= w and 0 <= float(line["y1"]) <= h
    for path in tree.of("path", cls="hist"):
        nums = [float(v) for v in re.findall(r"-?[0-9.]+", path["d"])]
        assert all(math.isfinite(v) and -0.01 <= v <= max(w, h) for v in nums)
    svg = bars_svg({"a": {"m1": -2.0, "m2": 3.0}, "b": {"m1": 1.0}}, "b", "y")
    tree = parse(svg)
    assert len(tree.of("rect", cls="bar")) == 3
    assert all(float(r["height"]) >= 0 for r in tree.of("rect", cls="bar"))
    assert len(tree.of("rect", cls="legend-swatch")) == 2


def test_chart_text_is_escaped():
    svg = scatter_svg([{"label": MALICIOUS, "x": 1, "y": 2}, {"label": "b", "x": 2, "y": 1}], MALICIOUS, MALICIOUS, MALICIOUS)
    svg += bars_svg({MALICIOUS: {MALICIOUS: 1.0}}, MALICIOUS, MALICIOUS)
    svg += histogram_svg({MALICIOUS: [1.0, 2.0]}, 5, MALICIOUS, MALICIOUS, {MALICIOUS: 1.5})
    assert "<script" not in svg
    parse(svg)
