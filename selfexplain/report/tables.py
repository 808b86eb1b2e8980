"""Leaderboards: a markdown table per benchmark (results.md) and the same in the terminal."""

from __future__ import annotations

from typing import Any

from rich.table import Table

METRIC_LABELS = {"exact_match": "exact match", "changed_macro_f1": "changed macro-F1",
                 "content_match": "content match",
                 "exact_match_subject_correct": "exact match (subject correct)",
                 "comprehensiveness_vs_random": "comprehensiveness - random",
                 "sufficiency_vs_random": "sufficiency - random (lower is better)",
                 "sufficiency": "sufficiency (lower is better)",
                 "aopc_comprehensiveness_vs_random": "AOPC comprehensiveness - random",
                 "aopc_sufficiency_vs_random": "AOPC sufficiency - random (lower is better)",
                 "aopc_comprehensiveness": "AOPC comprehensiveness",
                 "aopc_sufficiency": "AOPC sufficiency (lower is better)"}


def _fmt(est: dict[str, float]) -> str:
    return f"{100 * est['value']:.1f} [{100 * est['low']:.1f}, {100 * est['high']:.1f}]"


def is_estimate(v: Any) -> bool:
    return isinstance(v, dict) and {"value", "low", "high"} <= v.keys()


def metric_names(bench: dict[str, Any]) -> list[str]:
    """Every metric the explainers report (any top-level dict with value/low/high), the primary
    one first."""
    names: list[str] = []
    for stats in bench.get("explainers", {}).values():
        for key, v in stats.items():
            if is_estimate(v) and key not in names:
                names.append(key)
    primary = bench.get("primary_metric")
    if primary in names:
        names.remove(primary)
        names.insert(0, primary)
    return names


def metric_label(name: str) -> str:
    return METRIC_LABELS.get(name) or name.replace("_", " ")


TABLE_METRICS = 5


def table_metrics(bench: dict[str, Any]) -> list[str]:
    """The leaderboard's metric columns: the first TABLE_METRICS the benchmark reports (the
    rest, and the subject-correct variants, are in the HTML report)."""
    return [m for m in metric_names(bench) if not m.endswith("_subject_correct")][:TABLE_METRICS]


def leaderboard_rows(bench: dict[str, Any]) -> list[list[str]]:
    """Rows sorted by the primary metric, best first."""
    primary = bench["primary_metric"]
    rows = []
    for name, s in sorted(bench["explainers"].items(), key=lambda kv: -kv[1][primary]["value"]):
        pair = (bench.get("self_vs") or {}).get(name)
        rows.append([name] + [_fmt(s[m]) if m in s else "" for m in table_metrics(bench)] +
                    [f"{s.get('n_items', bench['n_test'])}{'*' if s.get('subsample') else ''}",
                     _fmt(pair["difference"]) if pair else "",
                     f"{100 * s['parse_rate']:.0f}%", f"{s['cost']['forward_passes']:.0f}",
                     f"{1000 * s['cost']['seconds']:.1f}"])
    return rows


def header(bench: dict[str, Any]) -> list[str]:
    return (["explainer"] + [metric_label(m) for m in table_metrics(bench)] +
            ["n", "self - this (paired)", "parsed", "fwd passes", "ms / expl."])


def _facts(bench: dict[str, Any]) -> list[str]:
    gt = bench["ground_truth"]
    if "raw_changed_rate" in gt:
        lines = [f"{bench['n_train']} training / {bench['n_test']} test records; "
                 f"subject accuracy without the intervention {100 * gt.get('subject_accuracy_unpatched', 0):.1f}%; "
                 f"changed rate before balancing {100 * gt.get('raw_changed_rate', 0):.1f}%, "
                 f"in the test set {100 * gt.get('test_changed_rate', 0):.1f}%."]
    else:
        lines = [f"{bench['n_train']} training / {bench['n_test']} test records."]
    lines += _dataset_facts(gt)
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


# An explainer whose answers say "changes" (or "unchanged") this often or more answers one way.
ONE_SIDED = 0.95


def one_sided(stats: dict[str, Any]) -> str:
    """'' or, for an explainer of a change benchmark that gives one kind of answer to (nearly)
    every item, e.g. "answered 'unchanged' on 99.7% of the items"."""
    rate = stats.get("said_changed_rate")
    if not isinstance(rate, float) or rate != rate or ONE_SIDED > rate > 1 - ONE_SIDED:
        return ""
    kind, share = ("changes", rate) if rate >= ONE_SIDED else ("unchanged", 1 - rate)
    return f"answered '{kind}' on {100 * share:.1f}% of the items"


def comparison_lines(bench: dict[str, Any]) -> list[str]:
    """The 'self - best other' and 'self - other' sentences of a benchmark (paired bootstrap).
    A rival that answered one way on nearly every item is named as such: beating it says
    little about what either learned."""
    lines = []
    for key, pair in comparison_pairs(bench):
        d = pair["difference"]
        rival = pair["best_other"]
        label = "best non-self explainer" if key == "self_vs_best_other" else "the other model"
        caveat = one_sided(bench["explainers"].get(rival, {}))
        lines.append(f"self - {rival} ({label}), {metric_label(pair['metric'])}: "
                     f"{_fmt(d)} points (paired bootstrap 95% CI): {verdict(d, rival)}"
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
        for dataset, hdr, rows in per_dataset_tables(bench):
            out.append(f"### {name}: {dataset}\n")
            out += _table(hdr, rows)
    return "\n".join(out)


def rich_tables(results: dict[str, Any]) -> list[Any]:
    items: list[Any] = []
    for name, bench in results["benchmarks"].items():
        table = Table(title=f"{name} — {metric_label(bench['primary_metric'])} (95% CI)", show_lines=False)
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


def _dataset_facts(gt: dict[str, Any]) -> list[str]:
    """Per-dataset facts of benchmarks over several datasets (rationales)."""
    lines = []
    for name, d in (gt.get("datasets") or {}).items():
        lines.append(f"{name}: {d['n_train']} train / {d['n_test']} test items; subject accuracy "
                     f"{100 * d['subject_accuracy_test']:.0f}% on the test items; document budget "
                     f"{d['budget_tokens']} tokens ({d['n_cut']} items cut, "
                     f"{100 * d['evidence_dropped_rate']:.0f}% of human evidence words outside the window); "
                     f"median {d['words_median']:.0f} words, human rationale {d['human_words_median']:.0f}; "
                     f"{d['malformed_rows']} malformed rows skipped.")
    return lines


PER_DATASET_METRICS = ("comprehensiveness", "comprehensiveness_vs_random", "sufficiency", "sufficiency_vs_random")


def per_dataset_tables(bench: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(dataset, header, rows) per dataset for benchmarks whose summaries hold `per_dataset`:
    each explainer's headline metrics with CIs, and self minus it (paired) on each."""
    primary = bench["primary_metric"]
    datasets = sorted({d for s in bench["explainers"].values() for d in s.get("per_dataset", {})})
    comparisons = bench.get("comparisons") or {}
    out = []
    for dataset in datasets:
        hdr = (["explainer", "n"] + [metric_label(m) for m in PER_DATASET_METRICS] +
               [f"self - this: {metric_label(m)}" for m in ("comprehensiveness", "sufficiency")] + ["cost vs self"])
        ranked = sorted(((n, s["per_dataset"][dataset]) for n, s in bench["explainers"].items()
                         if dataset in s.get("per_dataset", {})), key=lambda kv: -kv[1][primary]["value"])
        rows = []
        for name, d in ranked:
            pair = comparisons.get(name, {}).get(dataset, {})
            ratio = comparisons.get(name, {}).get("cost_ratio")
            rows.append([name, str(d["n"])] + [_fmt(d[m]) for m in PER_DATASET_METRICS] +
                        [_fmt(pair[m]) if m in pair else "" for m in ("comprehensiveness", "sufficiency")] +
                        [f"{ratio:.1f}x" if isinstance(ratio, float) and ratio == ratio else ""])
        out.append((dataset, hdr, rows))
    correct = [(n, s["subject_correct"]) for n, s in bench["explainers"].items() if "subject_correct" in s]
    if datasets and correct:
        hdr = ["explainer", "n"] + [metric_label(m) for m in PER_DATASET_METRICS]
        rows = [[name, str(d["n"])] + [_fmt(d[m]) for m in PER_DATASET_METRICS]
                for name, d in sorted(correct, key=lambda kv: -_or_low(kv[1][primary]["value"]))]
        out.append(("items the subject classifies correctly (macro over datasets)", hdr, rows))
    return out


def _or_low(x: float) -> float:
    return x if x == x else float("-inf")  # NaN (no such items) sorts last
