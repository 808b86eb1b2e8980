"""Leaderboards: a markdown table per benchmark (results.md) and the same in the terminal."""

from __future__ import annotations

from typing import Any

from rich.table import Table

METRIC_LABELS = {"exact_match": "exact match", "changed_macro_f1": "changed macro-F1",
                 "content_match": "content match"}


def _fmt(est: dict[str, float]) -> str:
    return f"{100 * est['value']:.1f} [{100 * est['low']:.1f}, {100 * est['high']:.1f}]"


def leaderboard_rows(bench: dict[str, Any]) -> list[list[str]]:
    """Rows sorted by the primary metric, best first."""
    primary = bench["primary_metric"]
    rows = []
    for name, s in sorted(bench["explainers"].items(), key=lambda kv: -kv[1][primary]["value"]):
        pair = (bench.get("self_vs") or {}).get(name)
        rows.append([name] + [_fmt(s[m]) for m in METRIC_LABELS] +
                    [f"{s.get('n_items', bench['n_test'])}{'*' if s.get('subsample') else ''}",
                     _fmt(pair["difference"]) if pair else "",
                     f"{100 * s['parse_rate']:.0f}%", f"{s['cost']['forward_passes']:.0f}",
                     f"{1000 * s['cost']['seconds']:.1f}"])
    return rows


HEADER = (["explainer"] + list(METRIC_LABELS.values()) +
          ["n", "self - this (paired)", "parsed", "fwd passes", "ms / expl."])


def _facts(bench: dict[str, Any]) -> list[str]:
    gt = bench["ground_truth"]
    lines = [f"{bench['n_train']} training / {bench['n_test']} test records; "
             f"subject accuracy without the intervention {100 * gt.get('subject_accuracy_unpatched', 0):.1f}%; "
             f"changed rate before balancing {100 * gt.get('raw_changed_rate', 0):.1f}%, "
             f"in the test set {100 * gt.get('test_changed_rate', 0):.1f}%."]
    if any(s.get("subsample") for s in bench["explainers"].values()):
        lines.append("* evaluated on a balanced test subsample (slow attribution baselines); their 'self - this' "
                     "column is paired on that subsample.")
    if bench.get("multitask"):
        trained = " and ".join(n for n in ("self", "other") if n in bench["explainers"]) or "self and other"
        lines.append(f"{trained}: one multitask adapter trained on every benchmark of the run.")
    return lines + comparison_lines(bench)


def verdict(difference: dict[str, float], rival: str) -> str:
    """Verdict of a paired 'self - rival' difference with its 95% CI."""
    return ("self wins" if difference["low"] > 0 else f"{rival} wins" if difference["high"] < 0
            else "no significant difference")


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
    """The 'self - best other' and 'self - other' sentences of a benchmark (paired bootstrap)."""
    lines = []
    for key, pair in comparison_pairs(bench):
        d = pair["difference"]
        rival = pair["best_other"]
        label = "best non-self explainer" if key == "self_vs_best_other" else "the other model"
        lines.append(f"self - {rival} ({label}), {METRIC_LABELS.get(pair['metric'], pair['metric'])}: "
                     f"{_fmt(d)} points (paired bootstrap 95% CI): {verdict(d, rival)}.")
    return lines


def markdown_summary(results: dict[str, Any]) -> str:
    out = [f"# selfexplain results\n\nRun directory: `{results['run_dir']}`; subject `{results['config']['subject']}`, "
           f"seed {results['config']['seed']}, mode {results['config']['mode']}.\n"
           "Values are percentages with 95% bootstrap confidence intervals.\n"]
    for name, bench in results["benchmarks"].items():
        out.append(f"## {name}\n")
        out += [f"{line}\n" for line in _facts(bench)]
        out.append("| " + " | ".join(HEADER) + " |")
        out.append("|" + "---|" * len(HEADER))
        out += ["| " + " | ".join(r) + " |" for r in leaderboard_rows(bench)]
        out.append("")
    return "\n".join(out)


def rich_tables(results: dict[str, Any]) -> list[Any]:
    items: list[Any] = []
    for name, bench in results["benchmarks"].items():
        table = Table(title=f"{name} — {METRIC_LABELS.get(bench['primary_metric'])} (95% CI)", show_lines=False)
        for h in HEADER:
            table.add_column(h, justify="left" if h == "explainer" else "right")
        for row in leaderboard_rows(bench):
            table.add_row(*row)
        items.append(table)
        items += _facts(bench)
    return items
