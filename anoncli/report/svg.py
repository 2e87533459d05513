"""Small dependency-free SVG charts for the HTML report: histograms, scatter plots, grouped bars.

Each chart function returns one standalone ``<svg>`` element as a string (it carries the SVG
namespace, so it also works saved as a file). Values that are None, not numbers, NaN or
infinite are skipped; an input with nothing left to draw gives a "no data" placeholder of
the same size, so a page's layout does not depend on what was measured. Every piece of
text is escaped. Pure functions: no I/O, no state.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from html import escape
from numbers import Real

SVG_NS = "http://www.w3.org/2000/svg"

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#999999")
THRESHOLD_PALETTE = ("#C0392B", "#333333", "#7B3294", "#1B7837")

WIDTH = 720
HEIGHT = 360
LEGEND_W = 210
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 40, 52
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
GRID = "#e6e6e6"
AXIS = "#444444"
LABEL_CHARS = 30

_NICE = (1.0, 2.0, 2.5, 5.0, 10.0)


# -- numbers ----------------------------------------------------------------------------------

def finite(value) -> float | None:
    """``value`` as a float when it is a real, finite number (bools excluded), else None."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def finite_values(values) -> list[float]:
    """The finite numbers of a list, tuple or array-like; anything else gives []."""
    if values is None or isinstance(values, (str, bytes, Mapping)):
        return []
    if not isinstance(values, (list, tuple)) and hasattr(values, "tolist"):
        try:
            values = values.tolist()
        except Exception:
            return []
        if not isinstance(values, list):
            values = [values]
    try:
        it = iter(values)
    except TypeError:
        return []
    out = []
    for v in it:
        f = finite(v)
        if f is not None:
            out.append(f)
    return out


def _pad_range(lo: float, hi: float) -> tuple[float, float]:
    if lo > hi:
        lo, hi = hi, lo
    if lo == hi:
        d = abs(lo) * 0.1 or 1.0
        lo, hi = lo - d, hi + d
    return lo, hi


def nice_step(span: float, max_ticks: int = 6) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at least ``span / (max_ticks - 1)``."""
    raw = span / max(1, max_ticks - 1)
    exp = math.floor(math.log10(raw))
    frac = raw / 10.0 ** exp
    for n in _NICE:
        if frac <= n * (1 + 1e-9):
            return n * 10.0 ** exp
    return 10.0 ** (exp + 1)


def step_decimals(step: float) -> int:
    """Decimals that print every multiple of ``step`` exactly (0.2 -> 1, 0.25 -> 2, 50 -> 0)."""
    exp = math.floor(math.log10(step))
    mantissa = step / 10.0 ** exp
    extra = 1 if abs(mantissa - 2.5) < 1e-6 else 0
    return max(0, -exp + extra)


def nice_ticks(lo, hi, max_ticks: int = 6) -> list[float]:
    """Round tick values covering [lo, hi]: multiples of a 1/2/2.5/5 x 10^k step, the first
    at or below ``lo`` and the last at or above ``hi`` (0..1 -> 0, 0.2, ..., 1.0). An empty
    range is widened around its value; non-finite bounds give []."""
    lo, hi = finite(lo), finite(hi)
    if lo is None or hi is None:
        return []
    lo, hi = _pad_range(lo, hi)
    span = hi - lo
    if not math.isfinite(span) or span <= 0:
        return []
    step = nice_step(span, max(2, int(max_ticks)))
    decimals = step_decimals(step)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    if last - first > 1000:
        return []
    return [round(k * step, decimals) + 0.0 for k in range(first, last + 1)]


def format_tick(value: float, ticks: list[float]) -> str:
    """A tick label with as many decimals as the ticks' step needs."""
    if value == 0:
        return "0"
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 0.0
    if step <= 0 or not math.isfinite(step):
        return f"{value:.3g}"
    decimals = step_decimals(step)
    biggest = max(abs(t) for t in ticks)
    if biggest >= 1e6 or biggest < 1e-3 or decimals > 12:
        # Scientific, with enough digits for the step to show: 1e+06, 2.5e+06; 1.2e-05.
        digits = max(0, math.floor(math.log10(biggest)) - math.floor(math.log10(step))
                     + (1 if step_decimals(step / 10.0 ** math.floor(math.log10(step))) else 0))
        text = f"{value:.{min(digits, 15)}e}"
    else:
        text = f"{value:.{decimals}f}"
    return text


def _short(value: float) -> str:
    return f"{value:.3g}"


# -- SVG pieces -------------------------------------------------------------------------------

def _n(v: float) -> str:
    """A coordinate: two decimals at most, no trailing zeros."""
    text = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _attrs(attrs: dict) -> str:
    parts = []
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, float):
            value = _n(value)
        parts.append(f' {key}="{escape(str(value), quote=True)}"')
    return "".join(parts)


def _el(tag: str, content: str | None = None, **attrs) -> str:
    attrs = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
    if content is None:
        return f"<{tag}{_attrs(attrs)}/>"
    return f"<{tag}{_attrs(attrs)}>{content}</{tag}>"


def _text(x: float, y: float, text: str, **attrs) -> str:
    return _el("text", escape(text), x=float(x), y=float(y), **attrs)


def _clip(text: str, chars: int = LABEL_CHARS) -> str:
    return text if len(text) <= chars else text[: max(1, chars - 1)] + "\u2026"


def _str(value) -> str:
    if value is None:
        return ""
    try:
        return str(value)
    except Exception:
        return "?"


def _open(width: int, height: int, title: str, kind: str) -> list[str]:
    t = escape(title)
    return [
        f'<svg xmlns="{SVG_NS}" class="chart {kind}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title, quote=True)}" '
        f'font-family="{escape(FONT, quote=True)}" font-size="11" fill="#222222">',
        f"<title>{t}</title>",
        _el("rect", class_="background", x=0, y=0, width=width, height=height, fill="#ffffff"),
        _text(width / 2, 22, _clip(title, 90), class_="chart-title", text_anchor="middle",
              font_size=14, font_weight=600),
    ]


def _no_data(title: str, width: int = WIDTH, height: int = HEIGHT, message: str = "no data") -> str:
    parts = _open(width, height, title, "no-data")
    parts.append(_el("rect", class_="frame", x=float(LEFT), y=float(TOP), width=float(width - LEFT - RIGHT),
                     height=float(height - TOP - BOTTOM), fill="#fafafa", stroke="#bbbbbb",
                     stroke_dasharray="4 4"))
    parts.append(_text(width / 2, (TOP + height - BOTTOM) / 2, message, class_="no-data",
                       text_anchor="middle", dominant_baseline="middle", font_size=14, fill="#777777"))
    parts.append("</svg>")
    return "".join(parts)


class _Scale:
    def __init__(self, d0: float, d1: float, r0: float, r1: float):
        self.d0, self.d1, self.r0, self.r1 = d0, d1, r0, r1

    def __call__(self, v: float) -> float:
        if self.d1 == self.d0:
            return (self.r0 + self.r1) / 2
        return self.r0 + (v - self.d0) / (self.d1 - self.d0) * (self.r1 - self.r0)


def _y_axis(parts: list, ticks: list[float], sy: _Scale, x0: float, x1: float, top: float,
            bottom: float, label: str) -> None:
    for t in ticks:
        y = sy(t)
        parts.append(_el("line", class_="grid", x1=x0, y1=y, x2=x1, y2=y, stroke=GRID))
        parts.append(_el("line", class_="tick", x1=x0 - 4, y1=y, x2=x0, y2=y, stroke=AXIS))
        parts.append(_text(x0 - 7, y, format_tick(t, ticks), class_="tick-label", text_anchor="end",
                           dy="0.32em"))
    parts.append(_el("line", class_="axis", x1=x0, y1=top, x2=x0, y2=bottom, stroke=AXIS))
    if label:
        cx, cy = 16.0, (top + bottom) / 2
        parts.append(_text(cx, cy, _clip(label, 50), class_="axis-label", text_anchor="middle",
                           transform=f"rotate(-90 {_n(cx)} {_n(cy)})"))


def _x_axis(parts: list, ticks: list[float], sx: _Scale, y0: float, left: float, right: float,
            label: str, height: int) -> None:
    for t in ticks:
        x = sx(t)
        parts.append(_el("line", class_="tick", x1=x, y1=y0, x2=x, y2=y0 + 4, stroke=AXIS))
        parts.append(_text(x, y0 + 16, format_tick(t, ticks), class_="tick-label", text_anchor="middle"))
    parts.append(_el("line", class_="axis", x1=left, y1=y0, x2=right, y2=y0, stroke=AXIS))
    if label:
        parts.append(_text((left + right) / 2, height - 12, _clip(label, 80), class_="axis-label",
                           text_anchor="middle"))


def _x_grid(parts: list, ticks: list[float], sx: _Scale, top: float, bottom: float) -> None:
    for t in ticks:
        x = sx(t)
        parts.append(_el("line", class_="grid", x1=x, y1=top, x2=x, y2=bottom, stroke=GRID))


def _legend_swatch(parts: list, x: float, y: float, colour: str, label: str) -> None:
    parts.append(_el("rect", class_="legend-swatch", x=x, y=y - 5, width=14, height=10, fill=colour,
                     fill_opacity="0.6", stroke=colour))
    parts.append(_text(x + 20, y, _clip(label, 30), class_="legend-label", dy="0.32em"))


def _legend_dash(parts: list, x: float, y: float, colour: str, label: str) -> None:
    parts.append(_el("line", class_="legend-swatch", x1=x, y1=y, x2=x + 14, y2=y, stroke=colour,
                     stroke_width=2, stroke_dasharray="4 3"))
    parts.append(_text(x + 20, y, _clip(label, 30), class_="legend-label", dy="0.32em"))


def _named(mapping) -> list[tuple[str, object]]:
    if not isinstance(mapping, Mapping):
        return []
    return [(_str(k), v) for k, v in mapping.items()]


def _clamp_int(value, default: int, lo: int, hi: int) -> int:
    f = finite(value)
    if f is None:
        return default
    return int(min(max(int(f), lo), hi))


# -- charts -----------------------------------------------------------------------------------

def histogram_svg(series: dict[str, list[float]], bins: int = 30, title: str = "", x_label: str = "",
                  threshold_lines: dict[str, float] | None = None, *, y_label: str | None = None,
                  normalize: bool = True, width: int = WIDTH, height: int = HEIGHT) -> str:
    """Overlaid step histograms of several series over common bins, one colour per series
    with a legend (which gives each series' n), and a vertical dashed line per threshold.

    With ``normalize`` (the default) each series is scaled to fractions of its own size, so
    series of very different sizes (a few genuine pairs, many impostor pairs) compare.
    """
    title = _str(title)
    data = [(name, finite_values(values)) for name, values in _named(series)]
    thresholds = [(name, f) for name, v in _named(threshold_lines) if (f := finite(v)) is not None]
    values = [v for _, vs in data for v in vs]
    if not values:
        return _no_data(title, width, height)
    bins = _clamp_int(bins, 30, 1, 500)
    dmin, dmax = min(values), max(values)
    axis_lo, axis_hi = dmin, dmax
    if dmin == dmax:
        # One distinct value: one bin centred on it, on an axis a little wider.
        axis_lo, axis_hi = _pad_range(dmin, dmax)
        bw = (axis_hi - axis_lo) / max(bins, 10)
        dmin, bins = dmin - bw / 2, 1
    else:
        bw = (dmax - dmin) / bins
    if not math.isfinite(bw) or bw <= 0:
        return _no_data(title, width, height)

    hists = []
    for name, vs in data:
        counts = [0] * bins
        for v in vs:
            counts[min(max(int((v - dmin) / bw), 0), bins - 1)] += 1
        heights = [c / len(vs) for c in counts] if (normalize and vs) else [float(c) for c in counts]
        hists.append((name, vs, heights))

    xt = nice_ticks(min([axis_lo] + [t for _, t in thresholds]), max([axis_hi] + [t for _, t in thresholds]))
    ymax = max(max(h) for _, _, h in hists)
    yt = nice_ticks(0.0, ymax if ymax > 0 else 1.0)
    if len(xt) < 2 or len(yt) < 2:
        return _no_data(title, width, height)

    left, right, top, bottom = LEFT, width - LEGEND_W - RIGHT, TOP, height - BOTTOM
    sx = _Scale(xt[0], xt[-1], left, right)
    sy = _Scale(yt[0], yt[-1], bottom, top)
    parts = _open(width, height, title, "histogram")
    _x_grid(parts, xt, sx, top, bottom)
    _y_axis(parts, yt, sy, left, right, top, bottom,
            y_label if y_label is not None else ("fraction of values" if normalize else "count"))
    _x_axis(parts, xt, sx, bottom, left, right, _str(x_label), height)

    legend_x, legend_y = right + 18, top + 8
    for i, (name, vs, heights) in enumerate(hists):
        colour = PALETTE[i % len(PALETTE)]
        if vs:
            d = [f"M{_n(sx(dmin))},{_n(sy(0.0))}"]
            for k, h in enumerate(heights):
                y = _n(sy(h))
                d.append(f"L{_n(sx(dmin + k * bw))},{y}L{_n(sx(dmin + (k + 1) * bw))},{y}")
            d.append(f"L{_n(sx(dmin + bins * bw))},{_n(sy(0.0))}Z")
            parts.append(_el("path", _el("title", escape(f"{name} (n = {len(vs)})")), class_="hist",
                             d="".join(d), fill=colour, fill_opacity="0.18", stroke=colour,
                             stroke_width="1.5", stroke_linejoin="round"))
        _legend_swatch(parts, legend_x, legend_y, colour, f"{name} (n = {len(vs)})")
        legend_y += 18
    for i, (name, t) in enumerate(thresholds):
        colour = THRESHOLD_PALETTE[i % len(THRESHOLD_PALETTE)]
        x = sx(t)
        parts.append(_el("line", _el("title", escape(f"{name} = {_short(t)}")), class_="threshold",
                         x1=x, y1=top, x2=x, y2=bottom, stroke=colour, stroke_width=2,
                         stroke_dasharray="6 4"))
        _legend_dash(parts, legend_x, legend_y, colour, f"{name} = {_short(t)}")
        legend_y += 18
    parts.append("</svg>")
    return "".join(parts)


def _padded_axis(values: list[float], pad: float = 0.08) -> tuple[float, float, list[float]]:
    """A domain a little wider than the values (so no point sits on an axis) and the nice
    ticks inside it."""
    lo, hi = _pad_range(min(values), max(values))
    d = (hi - lo) * pad
    lo, hi = lo - d, hi + d
    ticks = [t for t in nice_ticks(lo, hi) if lo - 1e-9 * (hi - lo) <= t <= hi + 1e-9 * (hi - lo)]
    return lo, hi, ticks


def scatter_svg(points: list[dict], title: str = "", x_label: str = "", y_label: str = "", *,
                width: int = WIDTH, height: int = HEIGHT) -> str:
    """Labelled points (``{"label", "x", "y"}``) on axes with nice ticks; points with a
    missing or non-finite coordinate are skipped."""
    title = _str(title)
    pts = []
    for p in points if isinstance(points, (list, tuple)) else []:
        if not isinstance(p, Mapping):
            continue
        x, y = finite(p.get("x")), finite(p.get("y"))
        if x is not None and y is not None:
            pts.append((_str(p.get("label")), x, y))
    if not pts:
        return _no_data(title, width, height)
    (x0, x1, xt), (y0, y1, yt) = (_padded_axis([p[k] for p in pts]) for k in (1, 2))
    if len(xt) < 2 or len(yt) < 2:
        return _no_data(title, width, height)

    left, right, top, bottom = LEFT, width - 24, TOP, height - BOTTOM
    sx = _Scale(x0, x1, left, right)
    sy = _Scale(y0, y1, bottom, top)
    parts = _open(width, height, title, "scatter")
    _x_grid(parts, xt, sx, top, bottom)
    _y_axis(parts, yt, sy, left, right, top, bottom, _str(y_label))
    _x_axis(parts, xt, sx, bottom, left, right, _str(x_label), height)
    for i, (label, x, y) in enumerate(pts):
        colour = PALETTE[i % len(PALETTE)]
        px, py = sx(x), sy(y)
        parts.append(_el("circle", _el("title", escape(f"{label}: x = {_short(x)}, y = {_short(y)}")),
                         class_="point", cx=px, cy=py, r=5, fill=colour, stroke="#ffffff",
                         stroke_width="1.5"))
        if label:
            near_right = px > right - 120
            parts.append(_text(px - 8 if near_right else px + 8, py - 7, _clip(label, 24),
                               class_="point-label", text_anchor="end" if near_right else "start"))
    parts.append("</svg>")
    return "".join(parts)


def bars_svg(groups: dict[str, dict[str, float]], title: str = "", y_label: str = "", *,
             width: int | None = None, height: int = HEIGHT) -> str:
    """Grouped bars: one cluster per outer key (group), one bar per inner key (metric), one
    colour per metric with a legend. The value axis always includes 0; missing values leave
    a gap in their cluster."""
    title = _str(title)
    rows = [(name, inner if isinstance(inner, Mapping) else {}) for name, inner in _named(groups)]
    metrics: list[str] = []
    for _, inner in rows:
        for key in inner:
            key = _str(key)
            if key not in metrics:
                metrics.append(key)
    table = [(name, {_str(k): finite(v) for k, v in inner.items()}) for name, inner in rows]
    values = [v for _, inner in table for v in inner.values() if v is not None]
    n_groups, n_metrics = len(table), max(1, len(metrics))
    if width is None:
        width = int(min(max(WIDTH, LEFT + n_groups * (n_metrics * 16 + 24) + LEGEND_W + RIGHT), 2400))
    if not values:
        return _no_data(title, width, height)
    lo, hi = min(0.0, min(values)), max(0.0, max(values))
    if lo == hi:
        hi = 1.0
    yt = nice_ticks(lo, hi)
    if len(yt) < 2:
        return _no_data(title, width, height)

    left, right, top, bottom = LEFT, width - LEGEND_W - RIGHT, TOP, height - BOTTOM
    sy = _Scale(yt[0], yt[-1], bottom, top)
    parts = _open(width, height, title, "bars")
    _y_axis(parts, yt, sy, left, right, top, bottom, _str(y_label))
    group_w = (right - left) / n_groups
    bar_w = group_w * 0.8 / n_metrics
    zero = sy(0.0)
    label_chars = max(4, int(group_w / 6.5))
    for gi, (group, inner) in enumerate(table):
        g0 = left + gi * group_w
        for mi, metric in enumerate(metrics):
            v = inner.get(metric)
            if v is None:
                continue
            colour = PALETTE[mi % len(PALETTE)]
            y = sy(v)
            x = g0 + group_w * 0.1 + mi * bar_w
            parts.append(_el("rect", _el("title", escape(f"{group} \u00b7 {metric}: {_short(v)}")),
                             class_="bar", x=x, y=min(y, zero), width=max(bar_w - 1, 0.5),
                             height=abs(zero - y), fill=colour))
            if bar_w >= 26:
                parts.append(_text(x + bar_w / 2, min(y, zero) - 3 if v >= 0 else max(y, zero) + 11,
                                   _short(v), class_="bar-value", text_anchor="middle", font_size=9))
        parts.append(_el("text", escape(_clip(group, label_chars)) + _el("title", escape(group)),
                         class_="group-label", x=g0 + group_w / 2, y=float(bottom + 16),
                         text_anchor="middle"))
    parts.append(_el("line", class_="axis zero", x1=float(left), y1=zero, x2=float(right), y2=zero,
                     stroke=AXIS))
    legend_x, legend_y = right + 18, top + 8
    for mi, metric in enumerate(metrics):
        _legend_swatch(parts, legend_x, legend_y, PALETTE[mi % len(PALETTE)], metric)
        legend_y += 18
    parts.append("</svg>")
    return "".join(parts)
