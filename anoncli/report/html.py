"""Render an ``anoncli report`` dict as one self-contained HTML5 page.

The page needs nothing else: CSS is inline, charts are inline SVG drawn by :mod:`.svg`, and
example images are the ``data:`` URIs already in the dict (any other image source is
refused, so the page never fetches anything). No JavaScript. Every key of the dict may be
missing, None or of the wrong type: what is there is rendered, the rest is marked as not
available, and a section that still fails is replaced by a one-line note instead of raising.
Every string that comes from the dict is escaped.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape

from .svg import bars_svg, finite, histogram_svg, scatter_svg

NA = '<span class="na">\u2014</span>'

THRESHOLD_LABELS = {"literature": "literature", "far_1e-3": "FAR 1e-3"}
SERIES_ORDER = ("anonymized", "genuine", "impostor")
GROUP_METRIC_ORDER = ("detection_rate", "original_detection_rate", "protection_rate")
GAP_ORDER = ("max_min", "mean_pairwise", "log_ratio", "std")
GAP_LABELS = {"max_min": "max \u2212 min", "mean_pairwise": "mean pairwise", "log_ratio": "log ratio", "std": "std"}
WHITE_BOX_NOTE = ("white-box: the anonymization method had access to this recognizer (for example it was "
                  "optimised against it), so the protection measured with it is optimistic and not an "
                  "independent estimate.")

CSS = """
:root { --fg: #1d1d1f; --muted: #666; --line: #ddd; --bg-alt: #f6f7f9; --accent: #0072B2; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: #fff; }
header, nav, main, footer { max-width: 1180px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 24px; }
h1 { font-size: 1.7rem; margin: 0 0 4px; }
h2 { font-size: 1.3rem; margin: 36px 0 12px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 1.05rem; margin: 22px 0 8px; }
p.meta, p.note, .na, figcaption { color: var(--muted); }
p.note { font-size: 0.9em; }
nav ul { list-style: none; padding: 8px 0; margin: 16px 0 0; display: flex; flex-wrap: wrap; gap: 6px 16px; border-top: 1px solid var(--line); border-bottom: 1px solid var(--line); }
nav a { color: var(--accent); text-decoration: none; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 12px 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { background: var(--bg-alt); border-radius: 8px; padding: 10px 18px; min-width: 120px; }
.card .value { font-size: 1.5rem; font-weight: 600; }
.card .label { color: var(--muted); }
.table-wrap { overflow-x: auto; margin: 8px 0 12px; }
table { border-collapse: collapse; min-width: 50%; }
th, td { text-align: left; padding: 5px 12px 5px 0; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: var(--bg-alt); }
tr.unavailable td { color: var(--muted); }
code { font: 0.9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; overflow-wrap: anywhere; }
.badge { display: inline-block; font-size: 0.75em; font-weight: 600; padding: 1px 7px; border-radius: 9px; margin-left: 6px; vertical-align: 1px; white-space: nowrap; }
.badge.white-box { background: #fde8c8; color: #8a4b00; border: 1px solid #e6a64c; }
.ok { color: #1b7837; }
.bad { color: #b2182b; }
.error { color: #b2182b; background: #fdecea; padding: 6px 10px; border-radius: 6px; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
figure.chart { margin: 8px 0; max-width: 100%; }
svg.chart { max-width: 100%; height: auto; display: block; }
.examples { display: grid; gap: 10px 12px; align-items: start; }
.examples.cols-2 { grid-template-columns: repeat(2, minmax(0, 1fr)); }
.examples.cols-3 { grid-template-columns: repeat(3, minmax(0, 1fr)); }
.examples .col-head { font-weight: 600; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
.examples figure { margin: 0; }
.examples img { width: 100%; height: auto; display: block; border-radius: 4px; background: var(--bg-alt); }
.examples figcaption { font-size: 0.85em; overflow-wrap: anywhere; }
.examples-wrap { overflow-x: auto; }
.examples.native.cols-2 { grid-template-columns: repeat(2, max-content); }
.examples.native.cols-3 { grid-template-columns: repeat(3, max-content); }
.examples.native img { width: auto; max-width: none; border-radius: 0; }
.missing { display: flex; align-items: center; justify-content: center; min-height: 120px; background: var(--bg-alt); color: var(--muted); border-radius: 4px; }
footer { margin-top: 40px; padding-top: 12px; padding-bottom: 24px; border-top: 1px solid var(--line); color: var(--muted); font-size: 0.85em; }
@media print { nav { display: none; } h2 { break-after: avoid; } figure, tr, .examples figure { break-inside: avoid; } }
"""


# -- values -----------------------------------------------------------------------------------

def _get(obj, *keys):
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _map(value) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else []


def _str(value) -> str:
    try:
        return str(value)
    except Exception:
        return "?"


def _txt(value) -> str:
    """Escaped text, or a dash for None / empty."""
    if value is None or value == "":
        return NA
    return escape(_str(value))


def _pct(value) -> str:
    f = finite(value)
    return NA if f is None else f"{f * 100:.1f} %"


def _pp(value) -> str:
    f = finite(value)
    return NA if f is None else f"{f * 100:.1f} pp"


def _float(value, unit: str = "") -> str:
    f = finite(value)
    if f is None:
        return NA
    a = abs(f)
    if a == 0:
        text = "0"
    elif a >= 1000:
        text = f"{f:,.0f}"
    elif a >= 100:
        text = f"{f:.1f}"
    elif a >= 1:
        text = f"{f:.2f}"
    else:
        text = f"{f:.3g}"
    return text + (f" {unit}" if unit else "")


def _int(value) -> str:
    f = finite(value)
    if f is None:
        return NA
    return f"{int(f):,}" if f == int(f) else _float(f)


def _json(value) -> str:
    if isinstance(value, str):
        return escape(value)
    try:
        return escape(json.dumps(value, sort_keys=True, default=str))
    except Exception:
        return escape(_str(value))


def _label(key) -> str:
    return _str(key).replace("_", " ")


def _is_rate(key) -> bool:
    return _str(key).endswith("rate")


def _keys(dicts, preferred=()) -> list:
    """Union of the keys of several mappings: ``preferred`` ones first (when present), then
    the others in order of appearance."""
    seen = []
    for d in dicts:
        for k in _map(d):
            if k not in seen:
                seen.append(k)
    return [k for k in preferred if k in seen] + [k for k in seen if k not in preferred]


def _threshold_label(key) -> str:
    return THRESHOLD_LABELS.get(key, _label(key)) if isinstance(key, str) else _label(key)


# -- HTML pieces ------------------------------------------------------------------------------

def _table(headers: list[str], rows: list[list[str]], numeric: set[int] | None = None, row_classes=None) -> str:
    """A table from already-escaped cells; columns in ``numeric`` are right-aligned."""
    numeric = numeric or set()
    num = ' class="num"'
    head = "".join(f"<th{num if i in numeric else ''}>{h}</th>" for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cls = (row_classes or {}).get(r) if isinstance(row_classes, dict) else None
        cells = "".join(f"<td{num if i in numeric else ''}>{c}</td>" for i, c in enumerate(row))
        tr = f'<tr class="{cls}">' if cls else "<tr>"
        body.append(f"{tr}{cells}</tr>")
    return (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _figure(svg: str, caption: str = "") -> str:
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure class="chart">{svg}{cap}</figure>'


def _badge_white_box() -> str:
    return f'<span class="badge white-box" title="{escape(WHITE_BOX_NOTE, quote=True)}">white-box</span>'


def _img(src, alt: str) -> str:
    if isinstance(src, str) and src.startswith("data:image/"):
        return f'<img src="{escape(src, quote=True)}" alt="{escape(alt, quote=True)}">'
    return '<div class="missing">not available</div>'


# -- sections ---------------------------------------------------------------------------------

def _header(r: Mapping) -> str:
    run = _map(r.get("run"))
    counts = _map(r.get("counts"))
    facts = [("Method", _txt(run.get("method"))), ("Run id", _txt(run.get("run_id"))),
             ("Anonymized images", _txt(r.get("anon_dir"))), ("Original images", _txt(r.get("original_dir")))]
    if r.get("restored_dir") is not None:
        facts.append(("Restored images", _txt(r.get("restored_dir"))))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    cards = "".join(f'<div class="card"><div class="value">{_int(counts.get(key))}</div>'
                    f'<div class="label">{label}</div></div>'
                    for key, label in (("images", "images"), ("faces", "faces"), ("matched", "matched faces")))
    meta = []
    if r.get("tool_version") is not None:
        meta.append(f"anoncli {_txt(r.get('tool_version'))}")
    if r.get("created") is not None:
        meta.append(f"created {_txt(r.get('created'))}")
    params = run.get("params")
    if isinstance(params, Mapping) and params:
        rows = [[f"<code>{escape(_str(k))}</code>", f"<code>{_json(v)}</code>"] for k, v in params.items()]
        params_html = "<h3>Parameters</h3>" + _table(["Parameter", "Value"], rows)
    elif params not in (None, {}, ""):
        params_html = f"<h3>Parameters</h3><p><code>{_json(params)}</code></p>"
    else:
        params_html = ""
    meta_text = " \u00b7 ".join(meta) if meta else "anoncli report"
    return (f"<header><h1>Anonymization report</h1>"
            f'<p class="meta">{meta_text}</p>'
            f'<dl class="facts">{dl}</dl><div class="cards">{cards}</div>{params_html}</header>')


def _evaluators(r: Mapping):
    evals = [e for e in _list(r.get("evaluators")) if isinstance(e, Mapping)]
    if not evals:
        return "evaluators", "Evaluators", _note("No evaluator in this report.")
    tkeys = _keys([e.get("thresholds") for e in evals], tuple(THRESHOLD_LABELS))
    if not tkeys:
        tkeys = list(THRESHOLD_LABELS)
    headers = (["Evaluator", "Version", "Weights (SHA-256)"]
               + [f"Threshold ({escape(_threshold_label(k))})" for k in tkeys]
               + ["Verification AUC", "Verification pairs", "Status"])
    numeric = set(range(3, 3 + len(tkeys) + 2))
    rows, classes, any_white = [], {}, False
    for i, e in enumerate(evals):
        name = _txt(e.get("name"))
        if e.get("white_box") is True:
            name += _badge_white_box()
            any_white = True
        sha = e.get("weights_sha256")
        if isinstance(sha, str) and sha:
            more = "\u2026" if len(sha) > 12 else ""
            sha_html = f'<code title="{escape(sha, quote=True)}">{escape(sha[:12])}{more}</code>'
        else:
            sha_html = NA
        thresholds = _map(e.get("thresholds"))
        verification = _map(e.get("verification"))
        available = e.get("available")
        if available is True:
            status = '<span class="ok">available</span>'
        elif available is False:
            status = '<span class="bad">unavailable</span>'
            if e.get("reason"):
                status += f": {_txt(e.get('reason'))}"
            classes[i] = "unavailable"
        else:
            status = _txt(e.get("reason")) if e.get("reason") else NA
        rows.append([name, _txt(e.get("version")), sha_html]
                    + [_float(thresholds.get(k)) for k in tkeys]
                    + [_float(verification.get("auc")), _int(verification.get("pairs")), status])
    body = _table(headers, rows, numeric, classes)
    sources = [f"<li>{_txt(e.get('name'))}: literature: {_txt(e.get('threshold_source'))}; FAR 1e-3: "
               f"{_txt(_map(e.get('far_threshold')).get('source'))}</li>" for e in evals if e.get("available") is True]
    if sources:
        body += _note("Where each threshold comes from:") + f'<ul class="note">{"".join(sources)}</ul>'
    if any_white:
        body += _note(escape(WHITE_BOX_NOTE))
    return "evaluators", "Evaluators", body


def _privacy(r: Mapping):
    privacy = _map(r.get("privacy"))
    if not privacy:
        return "privacy", "Privacy", _note("No privacy measurement in this report.")
    info = {e.get("name"): e for e in _list(r.get("evaluators"))
            if isinstance(e, Mapping) and isinstance(e.get("name"), str)}
    names = list(privacy)
    tkeys = _keys([_get(privacy, n, "protection_rate") for n in names], tuple(THRESHOLD_LABELS)) or list(THRESHOLD_LABELS)

    def name_cell(n) -> str:
        cell = _txt(n)
        if _get(info, n, "white_box") is True:
            cell += _badge_white_box()
        return cell

    rows = [[name_cell(n), _int(_get(privacy, n, "pairs"))]
            + [_pct(_get(privacy, n, "protection_rate", k)) for k in tkeys] for n in names]
    parts = [_note("Protection rate: fraction of anonymized faces that the evaluator no longer matches "
                   "to their original face (identity distance above the threshold)."),
             _table(["Evaluator", "Pairs"] + [f"Protection rate ({escape(_threshold_label(k))} threshold)" for k in tkeys],
                    rows, set(range(1, 2 + len(tkeys))))]

    ident = [(n, _map(_get(privacy, n, "identification"))) for n in names]
    ident = [(n, d) for n, d in ident if d]
    if ident:
        rows = [[name_cell(n), _int(d.get("probes")), _int(d.get("gallery")), _int(d.get("identities")),
                 _pct(d.get("rank1")), _pct(d.get("rank1_farthest")), _pct(d.get("baseline_rank1")), _pct(d.get("chance_rank1")),
                 _pct(d.get("rank5")), _pct(d.get("rank5_farthest")), _pct(d.get("baseline_rank5")),
                 _pct(d.get("chance_rank5"))] for n, d in ident]
        parts.append("<h3>Identification</h3>")
        parts.append(_note("Rank-k: fraction of probes whose true identity is among the k nearest gallery "
                           "faces; the baseline uses the original faces as probes; chance is what a matcher that ranks "
                           "the gallery at random scores, the floor of a small gallery of few identities. "
                           "The gallery holds the run's original faces (never a probe's own photo)"
                           + (f" and {_int(ident[0][1].get('gallery_extra'))} photos of {_txt(r.get('gallery_dir'))}"
                              if ident[0][1].get("gallery_extra") is not None else "")
                           + ". Lower is better for anonymized faces. <em>Farthest first</em> ranks the gallery "
                             "from the most distant face instead, as an attacker who knows that the method turns each "
                             "identity away from its owner's would: above chance there, the faces are linkable too."))
        parts.append(_table(["Evaluator", "Probes", "Gallery", "Identities", "Rank-1 anonymized", "Rank-1 farthest first",
                             "Rank-1 baseline", "Rank-1 chance", "Rank-5 anonymized", "Rank-5 farthest first",
                             "Rank-5 baseline", "Rank-5 chance"], rows, set(range(1, 12))))

    charts = []
    for n in names:
        distances = _map(_get(privacy, n, "distances"))
        series = {k: distances[k] for k in _keys([distances], SERIES_ORDER)}
        thresholds = {f"threshold, {_threshold_label(k)}": v for k, v in _map(_get(info, n, "thresholds")).items()
                      if finite(v) is not None}
        svg = histogram_svg(series, 30, f"Identity distances: {_str(n)}", "identity distance", thresholds)
        charts.append(_figure(svg))
    parts.append("<h3>Distance distributions</h3>")
    parts.append(_note("anonymized: each original face against its own anonymized version; genuine / "
                       "impostor: original faces of the same / of different people. Dashed lines: the "
                       "evaluator's decision thresholds."))
    parts.append(f'<div class="charts">{"".join(charts)}</div>')
    return "privacy", "Privacy", "".join(parts)


def _available_value(d: Mapping, unit: str = "") -> tuple[str, str]:
    if d.get("available") is False:
        return NA, "unavailable" + (f": {_txt(d.get('reason'))}" if d.get("reason") else "")
    return _float(d.get("value"), unit), (_txt(d.get("reason")) if d.get("reason") else "")


def _utility(r: Mapping):
    u = _map(r.get("utility"))
    rows = []
    det = _map(u.get("detection_rate"))
    if det:
        notes = []
        if det.get("detector") is not None:
            notes.append(f"detector {_txt(det.get('detector'))}")
        if finite(det.get("n")) is not None:
            notes.append(f"n = {_int(det.get('n'))}")
        rows.append(["Face detection rate",
                     f"anonymized {_pct(det.get('anonymized'))} \u00b7 original {_pct(det.get('original'))}",
                     ", ".join(notes)])
    lm = _map(u.get("landmarks"))
    if lm:
        if lm.get("available") is False:
            rows.append(["Landmark NME", NA, "unavailable" + (f": {_txt(lm.get('reason'))}" if lm.get("reason") else "")])
        else:
            rows.append(["Landmark NME", f"mean {_float(lm.get('nme_mean'))} \u00b7 median {_float(lm.get('nme_median'))}",
                         f"n = {_int(lm.get('n'))}" if finite(lm.get("n")) is not None else ""])
    for key, label, unit in (("ssim", "SSIM", ""), ("psnr", "PSNR", "dB")):
        d = _map(u.get(key))
        if d:
            rows.append([label, f"face {_float(d.get('face'), unit)} \u00b7 outside {_float(d.get('outside'), unit)}"
                                f" \u00b7 whole image {_float(d.get('whole'), unit)}",
                         "anonymized against original: the face boxes, the rest of the image, and the whole image"])
    for key, label in (("lpips", "LPIPS"), ("fid", "FID")):
        d = _map(u.get(key))
        if d:
            value, note = _available_value(d)
            rows.append([label, value, note])
    if not rows:
        return "utility", "Utility", _note("No utility measurement in this report.")
    return "utility", "Utility", _table(["Metric", "Value", "Notes"], rows)


def _realism(r: Mapping):
    rz = r.get("realism")
    if not isinstance(rz, Mapping) or not rz:
        return None
    parts = []
    kid = _map(rz.get("kid"))
    method = _map(rz.get("kid_method"))
    rows, classes = [], []
    for name, k in kid.items():
        k = _map(k)
        if k.get("available") is True:
            rows.append([_txt(name), _txt(k.get("features")), _float(k.get("kid")), _float(k.get("kid_std")),
                         _float(k.get("floor")), _float(k.get("real_vs_real")), _float(k.get("ratio")), _int(k.get("n"))])
            classes.append("")
        else:
            rows.append([_txt(name), "unavailable" + (f": {_txt(k.get('reason'))}" if k.get("reason") else ""),
                         NA, NA, NA, NA, NA, NA])
            classes.append("unavailable")
    if rows:
        parts.append("<h3>Kernel distance to real faces (KID)</h3>")
        parts.append(_table(["Feature space", "Features", "KID", "spread", "floor", "real vs real (mean)", "KID / floor", "faces"],
                            rows, {2, 3, 4, 5, 6, 7}, classes))
        parts.append(_note(
            f"Kernel {_txt(method.get('kernel'))}, {_txt(method.get('estimator'))}; {_txt(method.get('compared'))}, "
            f"over {_int(method.get('splits'))} random splits that keep each {_txt(method.get('split_by'))} on one side. "
            f"Floor: {_txt(method.get('floor'))}. Ratio: {_txt(method.get('ratio'))}; it grows with the number of "
            "faces, so compare runs of the same size. Mid-level spaces see texture (smear, ghosting, seams); "
            "last blocks see whether the face still reads as a face."))
    t = _map(rz.get("texture"))
    d = _map(rz.get("detection"))
    rows = []
    if t:
        if t.get("available") is False:
            rows.append(["Texture (fine detail in the face)", NA, "unavailable" + (f": {_txt(t.get('reason'))}" if t.get("reason") else "")])
        else:
            rows.append(["Texture (fine detail in the face)",
                         f"median {_float(t.get('median'))} \u00b7 quartiles {_float(t.get('q1'))}\u2013{_float(t.get('q3'))}",
                         f"anonymized / original high-frequency energy ({_txt(t.get('band'))}) in the {_txt(t.get('region'))}; "
                         f"1 = as sharp as the photo; n = {_int(t.get('n'))}"])
    if d:
        if d.get("available") is False:
            rows.append(["Detection by CenterFace", NA, "unavailable" + (f": {_txt(d.get('reason'))}" if d.get("reason") else "")])
        else:
            rows.append(["Detection by CenterFace",
                         f"anonymized {_pct(d.get('anonymized'))} (mean score {_float(d.get('mean_score_anonymized'))}) \u00b7 "
                         f"original {_pct(d.get('original'))} (mean score {_float(d.get('mean_score_original'))})",
                         f"{_txt(d.get('detector'))}, threshold {_float(d.get('threshold'))}; {_txt(d.get('match'))}; n = {_int(d.get('n'))}"])
    if rows:
        parts.append("<h3>Texture and detection</h3>")
        parts.append(_table(["Measure", "Value", "Notes"], rows))
    if not parts:
        return None
    return "realism", "Realism", "".join(parts)


def _recovery(r: Mapping):
    rec = r.get("recovery")
    if not isinstance(rec, Mapping) or not rec:
        return None
    wrong = rec.get("wrong_key")
    wrong = wrong if isinstance(wrong, Mapping) else None
    metrics = [("psnr", "PSNR", "dB"), ("ssim", "SSIM", ""), ("mae", "MAE", "")]
    rows = []

    def cells(key, unit=""):
        out = [_float(rec.get(key), unit)]
        if wrong is not None:
            out.append(_float(wrong.get(key), unit))
        return out

    for key, label, unit in metrics:
        rows.append([label] + cells(key, unit))
    ids = _map(rec.get("identity_distance"))
    wrong_ids = _map(wrong.get("identity_distance")) if wrong is not None else {}
    for name in _keys([ids, wrong_ids]):
        row = [f"Identity distance ({_txt(name)})", _float(ids.get(name))]
        if wrong is not None:
            row.append(_float(wrong_ids.get(name)))
        rows.append(row)
    n_row = ["Images", _int(rec.get("n"))]
    if wrong is not None:
        n_row.append(_int(wrong.get("n")))
    rows.append(n_row)
    headers = ["Restored against original", "Correct key"] + (["Wrong key"] if wrong is not None else [])
    body = _note("Restored images compared with the originals. With the correct key they should match "
                 "(high PSNR/SSIM, small distances); with a wrong key they should not.")
    return "recovery", "Recovery", body + _table(headers, rows, set(range(1, len(headers))))


def _fairness_attribute(attr, d: Mapping) -> str:
    groups = _map(d.get("groups"))
    parts = [f"<h3>{_txt(attr)}</h3>"]
    mkeys = [k for k in _keys(groups.values(), GROUP_METRIC_ORDER) if k != "n"]
    if groups:
        rows = []
        for g, vals in groups.items():
            vals = _map(vals)
            rows.append([_txt(g), _int(vals.get("n"))]
                        + [(_pct if _is_rate(k) else _float)(vals.get(k)) for k in mkeys])
        parts.append(_table(["Group", "n"] + [escape(_label(k)) for k in mkeys], rows, set(range(1, 2 + len(mkeys)))))
    gaps = _map(d.get("gaps"))
    if gaps:
        gkeys = _keys(gaps.values(), GAP_ORDER)
        rows = []
        for m, vals in gaps.items():
            vals = _map(vals)
            fmt = _pp if _is_rate(m) else _float
            rows.append([escape(_label(m))] + [(_float if k == "log_ratio" else fmt)(vals.get(k)) for k in gkeys])
        parts.append(_table(["Gap in"] + [escape(GAP_LABELS.get(k, _label(k))) for k in gkeys], rows,
                            set(range(1, 1 + len(gkeys)))))
    rate_keys = [k for k in mkeys if _is_rate(k)]
    chart_keys = rate_keys or mkeys
    scale = 100.0 if rate_keys else 1.0
    bars = {}
    for g, vals in groups.items():
        vals = _map(vals)
        bars[_str(g)] = {_label(k): (f * scale if (f := finite(vals.get(k))) is not None else None)
                         for k in chart_keys}
    parts.append(_figure(bars_svg(bars, f"{_str(attr)}: by group", "rate (%)" if rate_keys else "value")))
    return "".join(parts)


def _fairness(r: Mapping):
    fair = r.get("fairness")
    if not isinstance(fair, Mapping) or not fair:
        return None
    parts = [_note("Per-group rates and the gaps between groups (pp: percentage points). "
                   "Small groups give noisy rates: check n.")]
    for attr, d in fair.items():
        parts.append(_fairness_attribute(attr, _map(d)))
    return "fairness", "Fairness", "".join(parts)


def _compare(r: Mapping):
    runs = [c for c in _list(r.get("compare")) if isinstance(c, Mapping)]
    if not runs:
        return None
    rows = [[_txt(c.get("label")), _txt(c.get("method")), _pct(c.get("protection_rate")),
             _float(c.get("ssim_face")), _float(c.get("psnr_face"), "dB"), _pct(c.get("detection_rate"))]
            for c in runs]
    table = _table(["Run", "Method", "Protection rate", "SSIM (face)", "PSNR (face)", "Detection rate"],
                   rows, {2, 3, 4, 5})
    points = []
    for c in runs:
        p = finite(c.get("protection_rate"))
        points.append({"label": _str(c.get("label") if c.get("label") is not None else c.get("method") or ""),
                       "x": c.get("ssim_face"), "y": p * 100 if p is not None else None})
    svg = scatter_svg(points, "Privacy\u2013utility trade-off", "SSIM of the face region (utility)",
                      "protection rate (%)")
    return "compare", "Comparison of runs", table + _figure(
        svg, "Up and to the right is better: more faces protected, more of the face's structure kept.")


def _examples(r: Mapping):
    examples = [e for e in _list(r.get("examples")) if isinstance(e, Mapping)]
    if not examples:
        return None
    has_restored = any(isinstance(e.get("restored"), str) and e.get("restored", "").startswith("data:image/")
                       for e in examples)
    cols = [("original", "original"), ("anonymized", "anonymized")] + ([("restored", "restored")] if has_restored else [])
    native = all(e.get("native") is True for e in examples)
    cells = [f'<div class="col-head">{label}</div>' for _, label in cols]
    for e in examples:
        name = _str(e.get("input")) if e.get("input") is not None else ""
        for key, label in cols:
            caption = f"{label}" + (f" \u00b7 {escape(name)}" if name else "")
            cells.append(f"<figure>{_img(e.get(key), f'{label}: {name}' if name else label)}"
                         f"<figcaption>{caption}</figcaption></figure>")
    grid = f'<div class="examples cols-{len(cols)}{" native" if native else ""}">{"".join(cells)}</div>'
    if native:
        grid = (_note("At the photo's resolution: each face's neighbourhood cut from the files, not resized "
                      "(one image pixel per CSS pixel; lossless PNG).") + f'<div class="examples-wrap">{grid}</div>')
    return "examples", "Examples", grid


SECTIONS = (("evaluators", "Evaluators", _evaluators), ("privacy", "Privacy", _privacy),
            ("utility", "Utility", _utility), ("realism", "Realism", _realism), ("recovery", "Recovery", _recovery),
            ("fairness", "Fairness", _fairness), ("compare", "Comparison of runs", _compare),
            ("examples", "Examples", _examples))


def _failed(title: str, exc: BaseException) -> str:
    return f'<p class="error">The {escape(title.lower())} section could not be rendered ({escape(type(exc).__name__)}).</p>'


def render_html(report: dict) -> str:
    """The report as one self-contained HTML5 document (inline CSS and SVG, no script, no
    external resource). Never raises on a malformed or partial ``report``."""
    r = report if isinstance(report, Mapping) else {}
    try:
        header = _header(r)
    except Exception as exc:
        header = f"<header><h1>Anonymization report</h1>{_failed('header', exc)}</header>"

    sections = []
    for sid, title, fn in SECTIONS:
        try:
            out = fn(r)
        except Exception as exc:
            out = (sid, title, _failed(title, exc))
        if out is not None:
            sections.append(out)
    nav = "".join(f'<li><a href="#{sid}">{escape(title)}</a></li>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{escape(title)}</h2>{html}</section>' for sid, title, html in sections)

    run_label = _get(r, "run", "run_id") or _get(r, "run", "method")
    doc_title = "anoncli report" + (f" \u2014 {_str(run_label)}" if run_label else "")
    version = r.get("tool_version")
    footer = ("Generated by anoncli" + (f" {escape(_str(version))}" if version is not None else "")
              + ". This page is self-contained: it loads no external resource and runs no script.")
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(doc_title)}</title><style>{CSS}</style></head>"
            f"<body>{header}<nav><ul>{nav}</ul></nav><main>{body}</main>"
            f"<footer>{footer}</footer></body></html>\n")
