"""`selfexplain compare RUN_A RUN_B`: per benchmark and explainer, B minus A on the primary
metric with a 95% CI, paired over the test items both runs share (same id, query and answer),
unpaired (independent bootstrap) when they share none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selfexplain.metrics import Estimate, paired_difference, unpaired_difference
from selfexplain.runs.store import Store


@dataclass(frozen=True)
class Delta:
    benchmark: str
    explainer: str
    metric: str
    a: float | None
    b: float | None
    difference: Estimate | None  # None: the metric has no per-item scores
    paired: bool


def compare_runs(store: Store, run_a: str, run_b: str, seed: int = 0) -> list[Delta]:
    res_a, res_b = store.results(run_a), store.results(run_b)
    out = []
    for bench in [b for b in res_a["benchmarks"] if b in res_b["benchmarks"]]:
        ba, bb = res_a["benchmarks"][bench], res_b["benchmarks"][bench]
        metric = ba["primary_metric"]
        for explainer in [e for e in ba["explainers"] if e in bb["explainers"]]:
            va = _value(ba["explainers"][explainer], metric)
            vb = _value(bb["explainers"][explainer], metric)
            sa = store.item_scores(run_a, bench, explainer, metric)
            sb = store.item_scores(run_b, bench, explainer, metric)
            common = [k for k in sa if k in sb]
            diff, paired = None, False
            if common:
                diff, paired = paired_difference([sb[k] for k in common], [sa[k] for k in common], seed), True
            elif sa and sb:
                diff = unpaired_difference(list(sb.values()), list(sa.values()), seed)
            out.append(Delta(bench, explainer, metric, va, vb, diff, paired))
    return out


def _value(summary: dict[str, Any], metric: str) -> float | None:
    est = summary.get(metric)
    return est["value"] if isinstance(est, dict) else None
