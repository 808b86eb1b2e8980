"""One self-contained HTML report per run: leaderboards, charts and a per-example browser.

`render_html(results, examples)` takes a run's results.json dict and, per benchmark, rows
``{"id", "query", "truth", "context", "predictions": {explainer: {"text", "exact_match"}}}``.
The page needs no network: the plotly.js bundle is inlined once, example data is embedded as
escaped JSON and rendered by a small script through textContent only.
"""

from __future__ import annotations

import html
import json
import math
from importlib.resources import files
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from selfexplain.runs.atomic import write_text
from selfexplain.benchmarks.base import ReportFact, format_fact
from selfexplain.explainers.families import FAMILIES as _FAMILIES
from selfexplain.results import higher_is_better, is_estimate, metric_label, sort_key
from selfexplain.report.tables import comparison_lines, comparison_pairs, metric_names, verdict

# --------------------------------------------------------------------------- explainer families

# family -> (label, colour, what it is). Order = display order. Labels and descriptions are the
# shared vocabulary (explainers.families); colours are this page's.
_COLOURS = {"self": "#7c3aed", "other": "#0891b2", "untrained": "#f59e0b", "human": "#16a34a",
            "post-hoc": "#65a30d", "heuristic": "#94a3b8", "reference": "#a8a29e"}
FAMILY_INFO: dict[str, tuple[str, str, str]] = {
    fam: (label, _COLOURS.get(fam, "#a8a29e"), desc) for fam, (label, desc) in _FAMILIES.items()}


def family(bench: dict[str, Any], name: str) -> str:
    """The family the benchmark declared for an explainer ('reference' when unknown)."""
    fam = (bench.get("explainers", {}).get(name) or {}).get("family")
    return fam if fam in FAMILY_INFO else "reference"


KIND_COLOURS = {"changed": "#e11d48", "unchanged": "#64748b"}
PAGE_SIZE = 25

# --------------------------------------------------------------------------- small helpers


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _plottable(v: Any) -> bool:
    """An estimate whose value and CI are all finite numbers."""
    return is_estimate(v) and all(_finite(v[k]) for k in ("value", "low", "high"))


def _pct(x: Any, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}" if _finite(x) else "–"


def _cell(est: dict | None, signed: bool = False) -> str:
    """Table cell content: value, with its 95% CI in small type below."""
    if not is_estimate(est):
        return "–"
    f = _signed if signed else _pct
    return (f'<span class="v">{_e(f(est["value"]))}</span>'
            f'<span class="ci">{_e(f(est["low"]))} … {_e(f(est["high"]))}</span>')


def _ci(est: dict | None) -> str:
    if not is_estimate(est):
        return "–"
    return f"{_pct(est['value'])} [{_pct(est['low'])}, {_pct(est['high'])}]"


def _signed(x: Any) -> str:
    return f"{100 * x:+.1f}".replace("-", "−") if _finite(x) else "–"


def _diff(est: dict | None) -> str:
    if not is_estimate(est):
        return "–"
    return f"{_signed(est['value'])} [{_signed(est['low'])}, {_signed(est['high'])}]"


def _seconds(s: Any) -> str:
    if not _finite(s):
        return "–"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def _passes(x: Any) -> str:
    if not _finite(x):
        return "–"
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def _primary(bench: dict[str, Any]) -> str:
    names = metric_names(bench)
    return bench.get("primary_metric") or (names[0] if names else "exact_match")


def ranked(bench: dict[str, Any]) -> list[str]:
    """Explainer names, best primary metric first (ties: family order, then name)."""
    primary = _primary(bench)
    fams = list(FAMILY_INFO)
    best_first = sort_key(bench, primary)
    return sorted(bench.get("explainers", {}), key=lambda n: (best_first(n), fams.index(family(bench, n)), n))


def self_pair(bench: dict[str, Any], name: str) -> dict | None:
    """Paired bootstrap 'self - name' estimate, from self_vs or the two summary pairs."""
    pair = (bench.get("self_vs") or {}).get(name)
    if pair is None:
        for key in ("self_vs_best_other", "self_vs_other"):
            p = bench.get(key) or {}
            if p.get("best_other") == name:
                pair = p
                break
    d = (pair or {}).get("difference")
    return d if is_estimate(d) else None


def _verdict_class(d: dict | None, bench: dict[str, Any]) -> str:
    """win / loss / neutral of a 'self - rival' difference in the primary metric's direction."""
    if not d or not _finite(d.get("low")) or not _finite(d.get("high")):
        return "neutral"
    lo, hi = (d["low"], d["high"]) if higher_is_better(bench, _primary(bench)) else (-d["high"], -d["low"])
    return "win" if lo > 0 else "loss" if hi < 0 else "neutral"


def _n_items(bench: dict[str, Any], stats: dict[str, Any]) -> Any:
    if "n_items" in stats:
        return stats["n_items"]
    est = stats.get(_primary(bench))
    return est.get("n", bench.get("n_test", "–")) if isinstance(est, dict) else bench.get("n_test", "–")


def _plot_label(text: str) -> str:
    """Text for plotly labels: plotly parses a subset of HTML, so escape it (it decodes entities)."""
    return html.escape(str(text), quote=False)


def _clean(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become None, unknown objects strings."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def script_json(obj: Any) -> str:
    """JSON safe to embed in <script type="application/json">: <, >, &, U+2028/9 escaped."""
    text = json.dumps(_clean(obj), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for raw, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                     ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, esc)
    return text


# --------------------------------------------------------------------------- figures


class _Figures:
    """Renders figures to <div>s in document order; the first one carries the plotly.js bundle."""

    CONFIG = {"displaylogo": False, "responsive": True,
              "modeBarButtonsToRemove": ["lasso2d", "select2d", "autoScale2d"]}

    def __init__(self) -> None:
        self.count = 0

    def html(self, fig: go.Figure, height: int) -> str:
        fig.update_layout(
            template="plotly_white", height=height, autosize=True,
            font=dict(family="Inter, system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size=12,
                      color="#1f2937"),
            margin=dict(l=10, r=20, t=30, b=40), hoverlabel=dict(font_size=12),
            legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0, title_text=""),
        )
        fig.update_yaxes(automargin=True)
        fig.update_xaxes(automargin=True)
        out = pio.to_html(fig, full_html=False, include_plotlyjs=self.count == 0,
                          div_id=f"fig-{self.count}", config=self.CONFIG,
                          default_width="100%", default_height=f"{height}px")
        self.count += 1
        return f'<div class="figure">{out}</div>'


def _error(ests: list[dict]) -> dict:
    return dict(type="data", symmetric=False, thickness=1.3, width=4, color="#334155",
                array=[100 * (e["high"] - e["value"]) for e in ests],
                arrayminus=[100 * (e["value"] - e["low"]) for e in ests])


def _pct_range(ests: list[dict], pad: float = 0.0) -> list[float] | None:
    """[0, 100] (plus padding) when every estimate lies in [0, 1]; None (autorange) otherwise."""
    inside = all(0 <= e["low"] and e["high"] <= 1 for e in ests)
    return [-pad, 100 + pad] if inside else None


def _leader_figure(figs: _Figures, bench: dict[str, Any]) -> str:
    primary = _primary(bench)
    names = [n for n in ranked(bench) if _plottable(bench["explainers"][n].get(primary))]
    labels = {n: _plot_label(n + ("*" if bench["explainers"][n].get("subsample") else "")) for n in names}
    fig = go.Figure()
    for fam, (flabel, colour, _) in FAMILY_INFO.items():
        members = [n for n in names if family(bench, n) == fam]
        if not members:
            continue
        ests = [bench["explainers"][n][primary] for n in members]
        fig.add_bar(
            y=[labels[n] for n in members], x=[100 * e["value"] for e in ests], orientation="h",
            name=_plot_label(flabel), marker=dict(color=colour, line=dict(width=0)), error_x=_error(ests),
            customdata=[[100 * e["low"], 100 * e["high"], _n_items(bench, bench["explainers"][n])]
                        for n, e in zip(members, ests)],
            hovertemplate="<b>%{y}</b><br>%{x:.1f}% [%{customdata[0]:.1f}, %{customdata[1]:.1f}]"
                          "<br>n = %{customdata[2]}<extra>" + _plot_label(flabel) + "</extra>",
        )
    fig.update_layout(barmode="overlay", bargap=0.28)
    fig.update_yaxes(categoryorder="array", categoryarray=[labels[n] for n in reversed(names)])
    fig.update_xaxes(title_text=_plot_label(metric_label(bench, primary) + " (%)"),
                     range=_pct_range([bench["explainers"][n][primary] for n in names]))
    return figs.html(fig, 90 + 24 * max(3, len(names)))


def _place_labels(points: list[tuple[str, float, float]], xr: tuple[float, float], yr: tuple[float, float],
                  width_px: float = 1000, height_px: float = 330) -> list[str]:
    """Greedy text positions for (label, x, y) points so labels overlap neither each other nor markers.

    x, y and the ranges are in axis units (log10 decades for a log axis); sizes are estimated in pixels.
    """
    dx, dy = (xr[1] - xr[0]) / width_px, (yr[1] - yr[0]) / height_px
    marks = [(x - 6 * dx, x + 6 * dx, y - 6 * dy, y + 6 * dy) for _, x, y in points]
    placed: list[tuple[float, float, float, float]] = []

    def overlap(a: tuple, b: tuple) -> float:
        w = min(a[1], b[1]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[2], b[2])
        return w * h / (dx * dy) if w > 0 and h > 0 else 0.0

    out = []
    for i, (label, x, y) in enumerate(points):
        if not label:
            out.append("middle right")
            continue
        lines = label.split("\n")
        w, h = (max(map(len, lines)) * 6.3 + 4) * dx, 15 * len(lines) * dy
        cands = {"middle right": (x + 8 * dx, x + 8 * dx + w, y - h / 2, y + h / 2),
                 "middle left": (x - 8 * dx - w, x - 8 * dx, y - h / 2, y + h / 2),
                 "top center": (x - w / 2, x + w / 2, y + 7 * dy, y + 7 * dy + h),
                 "bottom center": (x - w / 2, x + w / 2, y - 7 * dy - h, y - 7 * dy),
                 "top right": (x + 4 * dx, x + 4 * dx + w, y + 5 * dy, y + 5 * dy + h),
                 "bottom right": (x + 4 * dx, x + 4 * dx + w, y - 5 * dy - h, y - 5 * dy),
                 "top left": (x - 4 * dx - w, x - 4 * dx, y + 5 * dy, y + 5 * dy + h),
                 "bottom left": (x - 4 * dx - w, x - 4 * dx, y - 5 * dy - h, y - 5 * dy)}

        def cost(box: tuple) -> float:
            outside = (max(0.0, xr[0] - box[0]) + max(0.0, box[1] - xr[1])) / dx + \
                      (max(0.0, yr[0] - box[2]) + max(0.0, box[3] - yr[1])) / dy
            return (10 * outside + sum(overlap(box, b) for b in placed)
                    + sum(overlap(box, m) for j, m in enumerate(marks) if j != i))

        best = min(cands, key=lambda k: (cost(cands[k]), list(cands).index(k)))
        placed.append(cands[best])
        out.append(best)
    return out


def _tick_seconds(s: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if s >= scale * 0.999:
            return f"{s / scale:g} {unit}"
    return f"{s:g} s"


def _cost_figure(figs: _Figures, bench: dict[str, Any]) -> str:
    primary = _primary(bench)
    pts = []
    for n in ranked(bench):
        s = bench["explainers"][n]
        cost = s.get("cost") or {}
        if _plottable(s.get(primary)) and _finite(cost.get("seconds")):
            pts.append((n, max(cost["seconds"], 1e-7), s[primary], cost.get("forward_passes")))
    fig = go.Figure()
    if pts:
        lo = math.floor(math.log10(min(p[1] for p in pts)))
        hi = math.ceil(math.log10(max(p[1] for p in pts)))
        ys = [100 * v for p in pts for v in (p[2]["low"], p[2]["high"])]
        yr = (-4.0, 104.0) if _pct_range([p[2] for p in pts]) else (min(ys) - 5, max(ys) + 5)
        xr = (lo - 0.3, hi + 0.5)
        # one label per group of coinciding points, placed where it overlaps nothing
        label_of: dict[str, str] = {}
        groups: list[list[tuple]] = []
        for p in pts:
            for g in groups:
                if abs(math.log10(g[0][1] / p[1])) < 0.15 and abs(g[0][2]["value"] - p[2]["value"]) < 0.012:
                    g.append(p)
                    break
            else:
                groups.append([p])
        for g in groups:
            label_of[g[0][0]] = ",\n".join(p[0] for p in g)
        where = dict(zip((p[0] for p in pts), _place_labels(
            [(label_of.get(p[0], ""), math.log10(p[1]), 100 * p[2]["value"]) for p in pts], xr, yr)))
        ticks = [10.0 ** k for k in range(lo, hi + 1)]
        fig.update_xaxes(type="log", tickvals=ticks, ticktext=[_tick_seconds(t) for t in ticks], range=list(xr))
        fig.update_yaxes(range=list(yr))
    for fam, (flabel, colour, _) in FAMILY_INFO.items():
        members = [p for p in pts if family(bench, p[0]) == fam]
        if not members:
            continue
        fig.add_scatter(
            x=[p[1] for p in members], y=[100 * p[2]["value"] for p in members], mode="markers+text",
            name=_plot_label(flabel),
            text=[_plot_label(label_of.get(p[0], "")).replace("\n", "<br>") for p in members],
            textposition=[where[p[0]] for p in members], textfont=dict(size=11, color="#334155"), cliponaxis=False,
            marker=dict(size=11, color=colour, line=dict(width=1, color="white")),
            error_y=dict(_error([p[2] for p in members]), width=0, color=colour, thickness=1.2),
            customdata=[[_plot_label(p[0]), _seconds(p[1]), _passes(p[3])] for p in members],
            hovertemplate="<b>%{customdata[0]}</b><br>%{y:.1f}%<br>%{customdata[1]} per explanation"
                          "<br>%{customdata[2]} forward passes<extra>" + _plot_label(flabel) + "</extra>",
        )
    fig.update_xaxes(title_text="seconds per explanation (log scale)")
    fig.update_yaxes(title_text=_plot_label(metric_label(bench, primary) + " (%)"))
    return figs.html(fig, 460)


def _family_bests(bench: dict[str, Any]) -> list[tuple[str, str]]:
    """(family, best explainer of that family by the primary metric), in family order."""
    primary = _primary(bench)
    out = []
    for fam in FAMILY_INFO:
        members = [n for n in ranked(bench) if family(bench, n) == fam and _plottable(bench["explainers"][n].get(primary))]
        if members:
            out.append((fam, members[0]))
    return out


def _family_figure(figs: _Figures, bench: dict[str, Any]) -> str:
    primary = _primary(bench)
    bests = _family_bests(bench)
    fig = go.Figure()
    cats = []
    for fam, name in bests:
        flabel, colour, _ = FAMILY_INFO[fam]
        s = bench["explainers"][name]
        e = s[primary]
        cat = _plot_label(f"{flabel}: {name}{'*' if s.get('subsample') else ''}")
        cats.append(cat)
        fig.add_bar(y=[cat], x=[100 * e["value"]], orientation="h", name=_plot_label(flabel), showlegend=False,
                    marker=dict(color=colour), error_x=_error([e]),
                    text=[f"{100 * e['value']:.1f}%"], textposition="inside", insidetextanchor="start",
                    textfont=dict(color="white"),
                    customdata=[[100 * e["low"], 100 * e["high"], _n_items(bench, s)]],
                    hovertemplate="<b>%{y}</b><br>%{x:.1f}% [%{customdata[0]:.1f}, %{customdata[1]:.1f}]"
                                  "<br>n = %{customdata[2]}<extra></extra>")
    fig.update_layout(barmode="overlay", bargap=0.3)
    fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(cats)))
    fig.update_xaxes(title_text=_plot_label(metric_label(bench, primary) + " (%)"),
                     range=_pct_range([bench["explainers"][n][primary] for _, n in bests]))
    return figs.html(fig, 80 + 46 * max(2, len(cats)))


# --------------------------------------------------------------------------- HTML sections


def _swatch(bench: dict[str, Any], name: str) -> str:
    colour = FAMILY_INFO[family(bench, name)][1]
    return f'<span class="swatch" style="background:{colour}"></span>'


def _name_cell(bench: dict[str, Any], name: str, stats: dict[str, Any] | None = None) -> str:
    tip = [(stats or {}).get("description", ""), f"family: {FAMILY_INFO[family(bench, name)][0]}"]
    info = (stats or {}).get("info")
    if isinstance(info, dict):
        tip.append("; ".join(f"{k} {v:.3g}" if _finite(v) else f"{k} {v}" for k, v in info.items()
                             if not isinstance(v, (dict, list)) or v))
    title = " — ".join(t for t in tip if t)
    return f'{_swatch(bench, name)}<span class="name" title="{_e(title)}">{_e(name)}</span>'


def _cibar(est: dict | None) -> str:
    if not _plottable(est):
        return ""
    clip = lambda x: max(0.0, min(100.0, 100 * x))  # noqa: E731
    lo, hi, v = clip(est["low"]), clip(est["high"]), clip(est["value"])
    return (f'<span class="cibar"><span class="range" style="left:{lo:.1f}%;width:{max(hi - lo, 0.5):.1f}%">'
            f'</span><span class="dot" style="left:{v:.1f}%"></span></span>')


def _leaderboard(bench: dict[str, Any]) -> str:
    metrics = metric_names(bench)
    head = ['<th class="l">#</th>', '<th class="l">explainer</th>']
    head += [f'<th{" class=primary" if i == 0 else ""}>{_e(metric_label(bench, m))}</th>' for i, m in enumerate(metrics)]
    head += ['<th title="test items this explainer answered; * = balanced subsample">n</th>',
             '<th title="paired bootstrap difference self − this explainer, points, 95% CI">self − this</th>',
             "<th>parsed</th>", '<th title="subject forward passes per explanation">fwd passes</th>',
             "<th>time / expl.</th>"]
    body = []
    for rank, name in enumerate(ranked(bench), 1):
        s = bench["explainers"][name]
        cells = [f'<td class="l rank">{rank}</td>', f'<td class="l">{_name_cell(bench, name, s)}</td>']
        for i, m in enumerate(metrics):
            est = s.get(m)
            if i == 0:
                cells.append(f'<td class="primary"><div class="pcell"><div class="stack">{_cell(est)}</div>'
                             f'{_cibar(est)}</div></td>')
            else:
                cells.append(f'<td><div class="stack">{_cell(est)}</div></td>')
        sub = s.get("subsample")
        cells.append(f'<td class="num">{_e(_n_items(bench, s))}'
                     f'{"<span class=star title=&quot;balanced test subsample&quot;>*</span>" if sub else ""}</td>')
        d = None if name == "self" else self_pair(bench, name)
        diff = "—" if name == "self" or d is None else f'<div class="stack">{_cell(d, signed=True)}</div>'
        cells.append(f'<td class="num diff {_verdict_class(d, bench)}">{diff}</td>')
        pr = s.get("parse_rate")
        cost = s.get("cost") or {}
        cells.append(f'<td class="num">{_e(_pct(pr, 0) + "%" if _finite(pr) else "–")}</td>')
        cells.append(f'<td class="num">{_e(_passes(cost.get("forward_passes")))}</td>')
        cells.append(f'<td class="num">{_e(_seconds(cost.get("seconds")))}</td>')
        row_cls = ' class="self"' if name == "self" else ""
        body.append(f"<tr{row_cls}>{''.join(cells)}</tr>")
    return (f'<div class="table-wrap"><table class="board"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _stat(label: str, value: str, sub: str = "") -> str:
    return (f'<div class="stat"><div class="stat-v">{_e(value)}</div><div class="stat-l">{_e(label)}</div>'
            f'{f"<div class=stat-s>{_e(sub)}</div>" if sub else ""}</div>')


def _stats_strip(bench: dict[str, Any]) -> str:
    cards = [_stat("train / test records", f"{bench.get('n_train', '–')} / {bench.get('n_test', '–')}")]
    cards += [_stat(f.label, format_fact(f), f.note) for f in _facts(bench) if f.headline]
    return f'<div class="stats">{"".join(cards)}</div>'


def _facts(bench: dict[str, Any]) -> list[ReportFact]:
    return [ReportFact(**f) for f in bench.get("facts") or []]


def _chart(figs: _Figures, chart: dict[str, Any]) -> str:
    """A declared ground-truth chart: 'split' rows (share of labels[0] vs labels[1]) or 'bars'."""
    rows = {k: v for k, v in (chart.get("rows") or {}).items() if _finite(v)}
    if not rows:
        return ""
    cats = [_plot_label(k) for k in rows]
    fig = go.Figure()
    if chart.get("kind") == "split":
        colours = ("#e11d48", "#64748b")
        for idx, (kind, share) in enumerate(((chart["labels"][0], lambda r: r), (chart["labels"][1], lambda r: 1 - r))):
            vals = [100 * share(v) for v in rows.values()]
            fig.add_bar(y=cats, x=vals, orientation="h", name=kind, marker=dict(color=colours[idx]),
                        text=[f"{v:.1f}%" for v in vals], textposition="inside", insidetextanchor="middle",
                        textfont=dict(color="white"), hovertemplate="%{y}: %{x:.1f}% " + kind + "<extra></extra>")
        fig.update_layout(barmode="stack", bargap=0.35, legend_traceorder="normal")
        fig.update_xaxes(range=[0, 100], title_text=chart.get("axis", ""))
        fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(cats)))
        return figs.html(fig, 90 + 44 * len(rows))
    xs = [100 * v for v in rows.values()]
    fig.add_bar(y=cats, x=xs, orientation="h", marker=dict(color="#e11d48", opacity=0.85),
                text=[f"{x:.1f}%" for x in xs], textposition="auto", cliponaxis=False, insidetextanchor="end",
                textfont=dict(size=11), hovertemplate="%{y}<br>%{x:.1f}%<extra></extra>")
    fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(cats)))
    fig.update_xaxes(title_text=chart.get("axis", ""), range=[0, min(100.0, 1.25 * max(xs + [1.0]))])
    fig.update_layout(title=dict(text=_plot_label(chart.get("title", "")), font=dict(size=13), x=0,
                                 xanchor="left"), margin=dict(t=50))
    return figs.html(fig, 110 + 22 * len(rows))


def _ground_truth(figs: _Figures, bench: dict[str, Any]) -> str:
    parts = ["<h3>Ground truth</h3>"]
    if bench.get("ground_truth_text"):
        parts.append(f'<p class="lead">{_e(bench["ground_truth_text"])}</p>')
    parts += [c for c in (_chart(figs, chart) for chart in bench.get("charts") or []) if c]
    groups: dict[str, list[ReportFact]] = {}
    for f in _facts(bench):
        if f.group:
            groups.setdefault(f.group, []).append(f)
    for group, facts in groups.items():
        rows = "".join(f"<tr><th>{_e(f.label)}</th><td>{_e(format_fact(f))}</td></tr>" for f in facts)
        table = f'<table class="kv">{rows}</table>'
        parts.append(f'<details class="more"><summary>{_e(group[0].upper() + group[1:])}</summary>{table}</details>'
                     if group.startswith("all ") else table)
    return "".join(parts)


def _verdict_callouts(bench: dict[str, Any]) -> str:
    out = []
    for (key, pair), line in zip(comparison_pairs(bench), comparison_lines(bench)):
        d = pair["difference"]
        head = verdict(d, pair["best_other"], higher_is_better(bench, pair["metric"]))
        line = line.removesuffix(f": {head}.") + "."
        out.append(f'<div class="verdict {_verdict_class(d, bench)}"><span class="v-head">'
                   f'{_e(head)}</span><span class="v-text">{_e(line)}</span></div>')
    return "".join(out)


def _family_table(bench: dict[str, Any]) -> str:
    primary = _primary(bench)
    rows = []
    for fam, name in _family_bests(bench):
        s = bench["explainers"][name]
        d = None if name == "self" else self_pair(bench, name)
        verdict_text = ("—" if name == "self" else verdict(d, name, higher_is_better(bench, primary)) if d
                        else "not paired")
        rows.append(
            f'<tr><td class="l"><span class="swatch" style="background:{FAMILY_INFO[fam][1]}"></span>'
            f'{_e(FAMILY_INFO[fam][0])}</td><td class="l">{_e(name)}</td>'
            f'<td class="num">{_e(_ci(s.get(primary)))}</td>'
            f'<td class="num">{_e(_n_items(bench, s))}{"*" if s.get("subsample") else ""}</td>'
            f'<td class="num diff {_verdict_class(d, bench)}">{"—" if name == "self" else _e(_diff(d))}</td>'
            f'<td class="l vt {_verdict_class(d, bench)}">{_e(verdict_text)}</td></tr>')
    return (f'<div class="table-wrap"><table class="board compact"><thead><tr><th class="l">family</th>'
            f'<th class="l">best explainer</th><th>{_e(metric_label(bench, primary))}</th><th>n</th>'
            f'<th>self − this</th><th class="l">verdict</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _legend(results: dict[str, Any]) -> str:
    present: dict[str, list[str]] = {}
    for bench in results.get("benchmarks", {}).values():
        for n in bench.get("explainers", {}):
            members = present.setdefault(family(bench, n), [])
            if n not in members:
                members.append(n)
    items = []
    for fam, (label, colour, desc) in FAMILY_INFO.items():
        if fam not in present:
            continue
        items.append(f'<div class="fam"><span class="swatch big" style="background:{colour}"></span><div>'
                     f'<div class="fam-l">{_e(label)}</div><div class="fam-d">{_e(desc)}.</div>'
                     f'<div class="fam-m">{_e(", ".join(present[fam]))}</div></div></div>')
    return f'<div class="legend">{"".join(items)}</div>'


def _header(results: dict[str, Any]) -> str:
    cfg = results.get("config") or {}
    chips = []
    for key in ("subject", "other", "seed", "mode", "benchmarks", "sources"):
        if cfg.get(key) not in (None, ""):
            chips.append(f'<span class="chip"><b>{_e(key)}</b> {_e(cfg[key])}</span>')
    versions = results.get("versions") or results.get("environment") or {}
    vchips = [f'<span class="chip ghost"><b>{_e(k)}</b> {_e(v)}</span>' for k, v in versions.items()
              if not isinstance(v, (dict, list))] if isinstance(versions, dict) else []
    cfg_rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in cfg.items())
    cfg_table = (f'<details class="cfg"><summary>full configuration</summary><table class="kv">{cfg_rows}</table>'
                 "</details>") if cfg_rows else ""
    run_dir = results.get("run_dir", "")
    return (f'<header class="hero"><div class="wrap"><div class="eyebrow">selfexplain · run report</div>'
            f'<h1>Do self-explanations beat human-centric interpretability?</h1>'
            f'<div class="rundir"><code>{_e(run_dir)}</code></div>'
            f'<div class="chips">{"".join(chips)}</div>'
            f'{f"<div class=chips>{chr(10).join(vchips)}</div>" if vchips else ""}'
            f"{cfg_table}"
            f"</div></header>")


def _tables_card(bench: dict[str, Any]) -> str:
    """The tables a benchmark adds to its section (e.g. per dataset), as declared."""
    tables = bench.get("tables") or []
    if not tables:
        return ""
    parts = ['<div class="card"><h3>Breakdown</h3>']
    if tables[0].get("lead"):
        parts.append(f'<p class="lead">{_e(tables[0]["lead"])}</p>')
    for t in tables:
        head = "".join(f'<th{" class=l" if i == 0 else ""}>{_e(h)}</th>' for i, h in enumerate(t["header"]))
        body = "".join("<tr>" + "".join(f'<td{" class=l" if i == 0 else " class=num"}>{_e(c)}</td>'
                                        for i, c in enumerate(row)) + "</tr>" for row in t["rows"])
        parts.append(f'<h4>{_e(t["title"])}</h4><div class="table-wrap"><table class="board"><thead><tr>{head}</tr>'
                     f"</thead><tbody>{body}</tbody></table></div>")
    return "".join(parts) + "</div>"


def _benchmark_section(figs: _Figures, idx: int, name: str, bench: dict[str, Any]) -> str:
    primary = _primary(bench)
    notes = []
    if any(s.get("subsample") for s in bench.get("explainers", {}).values()):
        notes.append("* evaluated on a balanced test subsample (the slow attribution baselines); "
                     "their “self − this” difference is paired with self on that subsample.")
    if bench.get("multitask"):
        notes.append("self and other use one multitask adapter trained on every benchmark of the run.")
    chance = "".join(f" {_e(n)}" for n in bench.get("notes") or [])
    return f"""
<section class="bench" id="bench-{idx}">
  <div class="wrap">
    <h2><span class="tag">benchmark</span>{_e(name)}</h2>
    {_stats_strip(bench)}
    <div class="card">
      <h3>Leaderboard</h3>
      <p class="lead">{_e(bench.get('scoring_text', ''))} Sorted by <b>{_e(metric_label(bench, primary))}</b>
      (the primary metric). Values are percentages with 95% bootstrap confidence intervals; <b>self − this</b> is
      the paired difference in points on the same items (<span class="win-t">green</span>: self significantly
      better, <span class="loss-t">red</span>: significantly worse). Hover an explainer's name for what it is.</p>
      {_leaderboard(bench)}
      {"".join(f'<p class="note">{_e(n)}</p>' for n in notes)}
    </div>
    <div class="grid2">
      <div class="card">
        <h3>{_e(metric_label(bench, primary).capitalize())} by explainer</h3>
        <p class="lead">Bars are the primary metric, whiskers the 95% CI, colours the explainer family.{chance}</p>
        {_leader_figure(figs, bench)}
      </div>
      <div class="card">{_ground_truth(figs, bench)}</div>
    </div>
    {_tables_card(bench)}
    <div class="card">
      <h3>Cost vs faithfulness</h3>
      <p class="lead">Wall-clock seconds per explanation on this run's hardware (log scale) against the primary
      metric, with 95% CIs: up and to the left is better. Hover a point for the number of subject forward passes
      each explanation needed.</p>
      {_cost_figure(figs, bench)}
    </div>
  </div>
</section>"""


def _overview(figs: _Figures, results: dict[str, Any]) -> str:
    blocks = []
    for name, bench in results.get("benchmarks", {}).items():
        if not bench.get("explainers"):
            continue
        blocks.append(f"""
    <div class="card">
      <h3><span class="tag">benchmark</span>{_e(name)}</h3>
      {_verdict_callouts(bench)}
      {_family_table(bench)}
      {_family_figure(figs, bench)}
    </div>""")
    return f"""
<section id="overview">
  <div class="wrap">
    <h2>Self vs other vs human-centric</h2>
    <p class="lead">For each benchmark, the best explainer of every family on the primary metric, with its 95% CI.
    The verdict compares <b>self</b> with a rival through a paired bootstrap on the same test items: the
    difference is significant when its confidence interval excludes zero. * = balanced test subsample.</p>
    {_legend(results)}
    {"".join(blocks) or '<p class="note">No benchmark results.</p>'}
  </div>
</section>"""


def _examples_payload(results: dict[str, Any], examples: dict[str, list[dict]]) -> dict[str, Any]:
    names: list[str] = []
    fam_of: dict[str, str] = {}
    for bench in results.get("benchmarks", {}).values():
        names += [n for n in ranked(bench) if n not in names]
        fam_of.update({n: family(bench, n) for n in bench.get("explainers", {}) if n not in fam_of})
    rows, kinds = [], []
    for bname, items in (examples or {}).items():
        for ex in items:
            ctx = ex.get("context") or {}
            kind = ctx.get("label") if isinstance(ctx.get("label"), str) else ""
            if kind and kind not in kinds:
                kinds.append(kind)
            preds = {}
            for pname, p in (ex.get("predictions") or {}).items():
                if pname not in names:
                    names.append(pname)
                em = p.get("exact_match")
                preds[pname] = [str(p.get("text", "")), float(em) if _finite(em) else None]
            rows.append({"b": bname, "id": str(ex.get("id", "")), "q": str(ex.get("query", "")),
                         "t": str(ex.get("truth", "")), "k": kind, "c": ctx, "p": preds})
    bench_names = list(results.get("benchmarks", {}))
    bench_names += [b for b in (examples or {}) if b not in bench_names]
    fams = list(FAMILY_INFO)
    names.sort(key=lambda n: fams.index(fam_of.get(n, "reference")))  # stable: by family, best first within it
    return {"benchmarks": [b for b in bench_names if b in (examples or {})], "kinds": kinds, "explainers": names,
            "family": {n: fam_of.get(n, "reference") for n in names},
            "familyInfo": {f: {"label": v[0], "color": v[1]} for f, v in FAMILY_INFO.items()},
            "kindColors": KIND_COLOURS, "pageSize": PAGE_SIZE, "rows": rows}


def _examples_section(payload: dict[str, Any]) -> str:
    return f"""
<section id="examples">
  <div class="wrap">
    <h2>Examples</h2>
    <p class="lead">Every test item with its input, the ground truth (what the subject actually did) and each
    explainer's answer, marked <span class="ok-t">✓ right</span> or <span class="bad-t">✗ wrong</span> by exact
    match. Search looks in the input, the ground truth and all answers. Pick an explainer to filter by whether it
    was right; attribution baselines answer only a subsample of the items.</p>
    <div class="card">
      <div class="controls">
        <label class="grow">Search<input id="ex-search" type="search" autocomplete="off"
          placeholder="text in input, truth or answers…"></label>
        <label>Benchmark<select id="ex-bench"><option value="">all</option></select></label>
        <label>Ground truth<select id="ex-kind"><option value="">all</option></select></label>
        <label>Explainer<select id="ex-expl"><option value="">all</option></select></label>
        <label>Its answer<select id="ex-correct" disabled><option value="">any</option>
          <option value="1">right</option><option value="0">wrong</option></select></label>
      </div>
      <div class="pager"><span id="ex-count" class="muted"></span><span class="spacer"></span>
        <button id="ex-prev" type="button">‹ prev</button><span id="ex-page" class="muted"></span>
        <button id="ex-next" type="button">next ›</button></div>
      <div id="ex-list"></div>
      <div class="pager bottom"><span class="spacer"></span><button id="ex-prev2" type="button">‹ prev</button>
        <button id="ex-next2" type="button">next ›</button></div>
    </div>
  </div>
  <script type="application/json" id="ex-data">{script_json(payload)}</script>
</section>"""


def _asset(name: str) -> str:
    """The page's stylesheet and script, kept as package files (report/assets/) to edit as CSS/JS."""
    return files("selfexplain.report").joinpath("assets", name).read_text(encoding="utf-8")


def render_html(results: dict[str, Any], examples: dict[str, list[dict]]) -> str:
    """The whole report as one HTML string (plotly.js inlined; no network needed to view it)."""
    figs = _Figures()
    benches = results.get("benchmarks") or {}
    overview = _overview(figs, results)
    sections = [_benchmark_section(figs, i, name, bench) for i, (name, bench) in enumerate(benches.items())
                if bench.get("explainers")]
    payload = _examples_payload(results, examples)
    nav = ['<a href="#overview">Self vs other vs human-centric</a>']
    nav += [f'<a href="#bench-{i}">{_e(name)}</a>' for i, (name, bench) in enumerate(benches.items())
            if bench.get("explainers")]
    nav.append(f'<a href="#examples">Examples ({len(payload["rows"])})</a>')
    cfg = results.get("config") or {}
    title = f"selfexplain report — {cfg.get('subject', '')} {', '.join(benches)}".strip()
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="selfexplain html_report">
<title>{_e(title)}</title>
<style>{_asset("report.css")}</style>
</head>
<body data-figures="{figs.count}">
{_header(results)}
<nav class="top"><div class="wrap">{"".join(nav)}</div></nav>
<main>
{overview}
{"".join(sections)}
{_examples_section(payload)}
</main>
<footer><div class="wrap">Generated by selfexplain. Percentages with 95% bootstrap confidence intervals;
paired differences are bootstrapped over the same test items. Self-contained: plotly.js is embedded.</div></footer>
<script>{_asset("report.js")}</script>
</body>
</html>
"""


def write_html_report(results: dict[str, Any], examples: dict[str, list[dict]], path: Path) -> Path:
    """Render the report and write it atomically (temporary file, then os.replace)."""
    return write_text(path, render_html(results, examples))
