"""Leaderboards: a markdown table per benchmark (results.md) and the same in the terminal.

Reads only the results schema (selfexplain.results): declared metrics with their directions,
facts, tables and notes; it knows no benchmark and no metric by name.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from selfexplain.benchmarks.base import ReportFact, format_fact
from selfexplain.metrics import format_estimate
from selfexplain.results import is_estimate, metric_label, metric_specs, ranked_explainers

_fmt = format_estimate
TABLE_METRICS = 5


def metric_names(bench: dict[str, Any]) -> list[str]:
    """The declared metrics some explainer reports, the primary one first."""
    reported = {k for s in bench.get("explainers", {}).values() for k, v in s.items() if is_estimate(v)}
    return [m["name"] for m in metric_specs(bench) if m["name"] in reported]


def table_metrics(bench: dict[str, Any]) -> list[str]:
    """The leaderboard's metric columns: the first TABLE_METRICS the benchmark reports (the
    rest, and the subject-correct variants, are in the HTML report)."""
    return [m for m in metric_names(bench) if not m.endswith("_subject_correct")][:TABLE_METRICS]


def leaderboard_rows(bench: dict[str, Any]) -> list[list[str]]:
    """Rows sorted by the primary metric, best first (in its declared direction)."""
    rows = []
    for name in ranked_explainers(bench):
        s = bench["explainers"][name]
        pair = (bench.get("self_vs") or {}).get(name)
        parse = s.get("parse_rate")
        rows.append([name] + [_fmt(s[m]) if m in s else "" for m in table_metrics(bench)] +
                    [f"{s.get('n_items', bench['n_test'])}{'*' if s.get('subsample') else ''}",
                     _fmt(pair["difference"]) if pair else "",
                     f"{100 * parse:.0f}%" if isinstance(parse, float) and parse == parse else "",
                     f"{s['cost']['forward_passes']:.0f}", f"{1000 * s['cost']['seconds']:.1f}"])
    return rows


def header(bench: dict[str, Any]) -> list[str]:
    return (["explainer"] + [metric_label(bench, m) for m in table_metrics(bench)] +
            ["n", "self - this (paired)", "parsed", "fwd passes", "ms / expl."])


def fact_lines(bench: dict[str, Any]) -> list[str]:
    """The benchmark's headline facts in one sentence, then one line per fact of a 'datasets'-like
    group (facts in a group named 'all ...' are left to the HTML report)."""
    facts = [ReportFact(**f) for f in bench.get("facts", [])]
    head = "; ".join(f"{f.label} {format_fact(f)}" + (f" ({f.note})" if f.note else "") for f in facts if f.headline)
    lines = [f"{bench['n_train']} training / {bench['n_test']} test records" + (f"; {head}." if head else ".")]
    lines += [f"{f.label}: {format_fact(f)}" for f in facts
              if not f.headline and f.group and not f.group.startswith("all ")]
    return lines


def _facts(bench: dict[str, Any]) -> list[str]:
    lines = fact_lines(bench)
    if any(s.get("subsample") for s in bench["explainers"].values()):
        lines.append("* evaluated on a balanced test subsample (slow attribution baselines); their 'self - this' "
                     "column is paired on that subsample.")
    if bench.get("multitask"):
        trained = " and ".join(n for n in ("self", "other") if n in bench["explainers"]) or "self and other"
        lines.append(f"{trained}: one multitask adapter trained on every benchmark of the run.")
    return lines + list(bench.get("notes") or []) + comparison_lines(bench)


def verdict(difference: dict[str, float], rival: str, higher_is_better: bool = True) -> str:
    """Verdict of a paired 'self - rival' difference with its 95% CI, in the metric's direction."""
    better, worse = (difference["low"] > 0, difference["high"] < 0) if higher_is_better else \
        (difference["high"] < 0, difference["low"] > 0)
    return "self wins" if better else f"{rival} wins" if worse else "no significant difference"


def comparison_pairs(bench: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(key, pair) of 'self_vs_best_other' and 'self_vs_other' when present, without repeating 'other'."""
    out = []
    for key in ("self_vs_best_other", "self_vs_other"):
        pair = bench.get(key)
        if not pair or (key == "self_vs_other" and (bench.get("self_vs_best_other") or {}).get("best_other") == "other"):
            continue
        out.append((key, pair))
    return out


def comparison_lines(bench: dict[str, Any]) -> list[str]:
    """The 'self - best other' and 'self - other' sentences of a benchmark (paired bootstrap).
    A rival that answered one way on nearly every item is named as such: beating it says
    little about what either learned."""
    from selfexplain.results import higher_is_better

    lines = []
    for key, pair in comparison_pairs(bench):
        d = pair["difference"]
        rival = pair["best_other"]
        label = "best non-self explainer" if key == "self_vs_best_other" else "the other model"
        caveat = bench["explainers"].get(rival, {}).get("one_sided", "")
        lines.append(f"self - {rival} ({label}), {metric_label(bench, pair['metric'])}: "
                     f"{_fmt(d)} points (paired bootstrap 95% CI): "
                     f"{verdict(d, rival, higher_is_better(bench, pair['metric']))}"
                     + (f" ({rival} {caveat}: it learned a constant answer, not the task)." if caveat else "."))
    return lines


def markdown_summary(results: dict[str, Any]) -> str:
    out = [f"# selfexplain results\n\nRun directory: `{results['run_dir']}`; subject `{results['config']['subject']}`, "
           f"seed {results['config']['seed']}, mode {results['config']['mode']}.\n"
           "Values are percentages with 95% bootstrap confidence intervals.\n"]
    for name, bench in results["benchmarks"].items():
        out.append(f"## {name}\n")
        out += [f"{line}\n" for line in _facts(bench)]
        out += _table(header(bench), leaderboard_rows(bench))
        for t in bench.get("tables") or []:
            out.append(f"### {name}: {t['title']}\n")
            out += _table(t["header"], t["rows"])
    return "\n".join(out)


def rich_tables(results: dict[str, Any]) -> list[Any]:
    items: list[Any] = []
    for name, bench in results["benchmarks"].items():
        table = Table(title=f"{name} — {metric_label(bench, bench['primary_metric'])} (95% CI)", show_lines=False)
        for h in header(bench):
            table.add_column(h, justify="left" if h == "explainer" else "right")
        for row in leaderboard_rows(bench):
            table.add_row(*row)
        items.append(table)
        items += _facts(bench)
    return items


def _table(hdr: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)] + ["| " + " | ".join(r) + " |" for r in rows]
            + [""])
