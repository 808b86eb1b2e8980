"""A study's report (runs/study.py): seed-pooled leaderboards, learning curves (a table and a
plot of the primary metric with CIs against training records, log x), the pooled self - rival
verdicts and the withheld-vector differences. Markdown (study.md), terminal tables and one
self-contained HTML page (study.html). Reads only the study dict; knows no benchmark."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from selfexplain.metrics import format_estimate
from selfexplain.report.tables import verdict
from selfexplain.runs.atomic import write_text


def _pct(x: Any) -> str:
    return "–" if not isinstance(x, (int, float)) or x != x else f"{100 * x:.1f}"


def _ranked(bench: dict[str, Any], point: dict[str, Any]) -> list[str]:
    sign = -1.0 if bench["higher_is_better"] else 1.0
    key = lambda n: (sign * point["explainers"][n]["pooled"]["value"]  # noqa: E731
                     if point["explainers"][n]["pooled"]["value"] == point["explainers"][n]["pooled"]["value"]
                     else float("inf"))
    return sorted(point["explainers"], key=key)


def _pair_text(pair: dict[str, Any] | None, rival: str, higher: bool) -> str:
    if not pair:
        return ""
    return f"{format_estimate(pair['difference'])} ({verdict(pair['difference'], rival, higher)})"


def seeds_table(bench: dict[str, Any], point: dict[str, Any], n_seeds: int) -> tuple[list[str], list[list[str]]]:
    """One point's leaderboard: pooled mean [CI over seeds and items], spread across seeds, per-seed values."""
    hdr = ["explainer", f"{bench['metric_label']}: mean of {n_seeds} seeds [95% CI, seeds x items]",
           "across-seed SD", "min - max", "per seed", "self - this (pooled, paired)"]
    rows = []
    for n in _ranked(bench, point):
        e = point["explainers"][n]
        sp = e["spread"]
        rows.append([n + ("*" if e["subsample"] else ""), format_estimate(e["pooled"]), _pct(sp["sd"]),
                     f"{_pct(sp['min'])} - {_pct(sp['max'])}", ", ".join(_pct(v) for v in e["per_seed"]),
                     _pair_text(point["self_vs"].get(n), n, bench["higher_is_better"])])
    return hdr, rows


def curve_table(bench: dict[str, Any], study: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Explainers x training sizes: pooled primary metric [95% CI]; then the self optimizer
    steps per size and each explainer's sample efficiency."""
    points = bench["points"]
    eff = (bench.get("curve") or {}).get("sample_efficiency", {})
    hdr = ["explainer"] + [f"{p['train_size']:,}" for p in points] + [
        f"fraction of final at {points[0]['train_size']:,}"]
    rows = []
    for n in _ranked(bench, points[-1]):
        cells = [format_estimate(p["explainers"][n]["pooled"]) if n in p["explainers"] else "" for p in points]
        rows.append([n] + cells + [f"{eff[n]:.2f}" if n in eff else ""])
    for trained in ("self", "other"):
        steps = [(p["explainers"].get(trained) or {}).get("steps") or [] for p in points]
        if any(s and s[0] for s in steps):
            rows.append([f"({trained}: optimizer steps)"] + ["/".join(str(x) for x in s if x) for s in steps] + [""])
    return hdr, rows


def summary_lines(bench: dict[str, Any], study: dict[str, Any]) -> list[str]:
    """The verdicts: pooled self - best other per point, withheld-vector differences, the curve's crossing."""
    higher, lines = bench["higher_is_better"], []
    n_seeds = len(study["seeds"])
    for p in bench["points"]:
        at = f" at {p['train_size']:,} training records" if p["train_size"] is not None else ""
        pair = p.get("self_vs_best_other")
        if pair:
            lines.append(f"self - {pair['best_other']} (best non-self){at}, {bench['metric_label']}: "
                         f"{format_estimate(pair['difference'])} points (95% CI resampling {n_seeds} seed(s) and "
                         f"items, paired): {verdict(pair['difference'], pair['best_other'], higher)}.")
        for control, c in p.get("vector_controls", {}).items():
            lines.append(f"withheld vector{at}: {c['base']} - {control} = {format_estimate(c['difference'])} points "
                         f"(paired, {n_seeds} seed(s)): the measured contribution of the injected vector.")
    curve = bench.get("curve") or {}
    if curve.get("rival"):
        if curve.get("crossings"):
            where = ", ".join(f"~{k:,.0f}" for k in curve["crossings"])
            lines.append(f"self and {curve['rival']} cross at {where} training records (linear in log size between "
                         "measured points).")
        else:
            lines.append(f"self and {curve['rival']} do not cross between {study['train_sizes'][0]:,} and "
                         f"{study['train_sizes'][-1]:,} training records; gap at the largest size "
                         f"{format_estimate(curve['gap_at_largest'])} points (paired).")
        if "gap_per_doubling" in curve:
            text = (f"Log-linear fit of the gap (self - {curve['rival']}, positive = self better): "
                    f"{100 * curve['gap_per_doubling']:+.1f} points per doubling of the training records")
            if "extrapolated_crossing" in curve:
                text += (f"; extrapolated, the gap would close at ~{curve['extrapolated_crossing']:,.0f} records "
                         "(an extrapolation beyond the measured sizes, not a measurement)")
            lines.append(text + ".")
    return lines


def _tables(bench: dict[str, Any], study: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    out = []
    if study["train_sizes"]:
        hdr, rows = curve_table(bench, study)
        out.append((f"learning curve: {bench['metric_label']}, mean of {len(study['seeds'])} seed(s) [95% CI] by "
                    "training records", hdr, rows))
    if len(study["seeds"]) > 1:
        point = bench["points"][-1]
        at = f" at {point['train_size']:,} training records" if point["train_size"] is not None else ""
        hdr, rows = seeds_table(bench, point, len(study["seeds"]))
        out.append((f"{len(study['seeds'])} seeds{at}", hdr, rows))
    return out


def _setup(study: dict[str, Any]) -> str:
    cfg = study["config"]
    sizes = ", ".join(f"{k:,}" for k in study["train_sizes"]) or "the mode's size"
    return (f"subject `{cfg['subject']}`, mode {cfg['mode']}, seeds {', '.join(map(str, study['seeds']))}, training "
            f"records {sizes}; {cfg['epochs']:g} epoch(s) at batch size {cfg['batch_size']} for every size "
            "(optimizer steps grow with the records).")


def _run_label(run: dict[str, Any]) -> str:
    size = run["train_size"]
    return f"seed {run['seed']}" + (f", {size:,} training records" if size is not None else "")


def study_markdown(study: dict[str, Any]) -> str:
    out = [f"# selfexplain study\n\n{_setup(study)}\nValues are percentages; CIs resample seeds and test items.\n"]
    for name, bench in study["benchmarks"].items():
        out.append(f"## {name}\n")
        for title, hdr, rows in _tables(bench, study):
            out += [f"### {title}\n", "| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
            out += ["| " + " | ".join(r) + " |" for r in rows] + [""]
        out += [f"{line}\n" for line in summary_lines(bench, study)]
    out.append("## runs\n")
    out += [f"- {_run_label(r)}: `{r['run_id']}` ({r['wall_seconds']:.0f} s)" for r in study["runs"]]
    return "\n".join(out) + "\n"


def rich_study(study: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    items: list[Any] = [_setup(study)]
    for name, bench in study["benchmarks"].items():
        for title, hdr, rows in _tables(bench, study):
            table = Table(title=f"{name} — {title}")
            for h in hdr:
                table.add_column(h, justify="left" if h == "explainer" else "right")
            for r in rows:
                table.add_row(*r)
            items.append(table)
        items += summary_lines(bench, study)
    return items


_COLOURS = {"self": "#7c3aed", "other": "#0891b2", "untrained": "#f59e0b", "human": "#16a34a",
            "post-hoc": "#65a30d", "heuristic": "#94a3b8", "reference": "#a8a29e"}


def curve_figure(bench: dict[str, Any], study: dict[str, Any]) -> go.Figure:
    """Primary metric (pooled, 95% CI) against training records, log x; one line per explainer."""
    fig = go.Figure()
    points = bench["points"]
    for n in _ranked(bench, points[-1]):
        at = [p for p in points if n in p["explainers"]]
        ests = [p["explainers"][n]["pooled"] for p in at]
        e = points[-1]["explainers"][n]
        dash = "dot" if e["reference"] else "solid"
        fig.add_scatter(x=[p["train_size"] for p in at], y=[100 * v["value"] for v in ests], mode="lines+markers",
                        name=html.escape(n), line=dict(color=_COLOURS.get(e["family"], "#a8a29e"), dash=dash),
                        error_y=dict(type="data", symmetric=False, array=[100 * (v["high"] - v["value"]) for v in ests],
                                     arrayminus=[100 * (v["value"] - v["low"]) for v in ests], thickness=1.2, width=3))
    fig.update_xaxes(type="log", title_text="training records (log scale)",
                     tickvals=study["train_sizes"], ticktext=[f"{k:,}" for k in study["train_sizes"]])
    fig.update_yaxes(title_text=html.escape(bench["metric_label"]) + " (%)")
    fig.update_layout(template="plotly_white", height=420, margin=dict(l=10, r=20, t=30, b=40))
    return fig


def seeds_figure(bench: dict[str, Any], study: dict[str, Any]) -> go.Figure:
    """Pooled mean with its CI (bars) and each seed's value (dots), per explainer."""
    point = bench["points"][-1]
    names = _ranked(bench, point)[::-1]
    fig = go.Figure()
    ests = [point["explainers"][n]["pooled"] for n in names]
    fig.add_bar(y=names, x=[100 * e["value"] for e in ests], orientation="h", name="mean of seeds",
                marker_color=[_COLOURS.get(point["explainers"][n]["family"], "#a8a29e") for n in names],
                error_x=dict(type="data", symmetric=False, array=[100 * (e["high"] - e["value"]) for e in ests],
                             arrayminus=[100 * (e["value"] - e["low"]) for e in ests]))
    fig.add_scatter(y=[n for n in names for _ in point["explainers"][n]["per_seed"]],
                    x=[100 * v for n in names for v in point["explainers"][n]["per_seed"]], mode="markers",
                    name="one seed", marker=dict(color="#111827", size=6, symbol="circle-open"))
    fig.update_xaxes(title_text=html.escape(bench["metric_label"]) + " (%)")
    fig.update_layout(template="plotly_white", height=120 + 26 * len(names), margin=dict(l=10, r=20, t=30, b=40))
    return fig


def render_study_html(study: dict[str, Any]) -> str:
    import plotly.io as pio

    e = lambda t: html.escape(str(t), quote=True)  # noqa: E731
    parts, first = [], True
    for name, bench in study["benchmarks"].items():
        parts.append(f"<h2>{e(name)}</h2>")
        figs = ([curve_figure(bench, study)] if study["train_sizes"] else []) + (
            [seeds_figure(bench, study)] if len(study["seeds"]) > 1 else [])
        for fig in figs:
            parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=first, config={"displaylogo": False}))
            first = False
        for title, hdr, rows in _tables(bench, study):
            head = "".join(f"<th>{e(h)}</th>" for h in hdr)
            body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
            parts.append(f"<h3>{e(title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        parts += [f"<p>{e(line)}</p>" for line in summary_lines(bench, study)]
    runs = "".join(f"<li>{e(_run_label(r))}: <code>{e(r['run_id'])}</code> ({r['wall_seconds']:.0f} s)</li>"
                   for r in study["runs"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>selfexplain study</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#1f2937}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #e5e7eb;padding:3px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}</style></head>
<body><h1>selfexplain study</h1><p>{e(_setup(study))} Values are percentages; CIs resample seeds and test items.
Each run's own report is in its run directory.</p>
{"".join(parts)}<h2>runs</h2><ul>{runs}</ul></body></html>
"""


def write_study_html(study: dict[str, Any], path: Path) -> Path:
    return write_text(path, render_study_html(study))
