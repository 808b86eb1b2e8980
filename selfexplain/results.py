"""The results schema: what a run writes (results.json and the store's results column) and the
only thing the reports, `compare` and the README table generator read.

Version 2 (this one)::

    {"schema_version": 2, "run_dir", "run_id", "config", "environment",
     "benchmarks": {name: {
         "description", "answer_format", "scoring_text", "ground_truth_text",
         "metrics": [{"name", "label", "higher_is_better", "primary", "percent"}],   # declared
         "primary_metric", "n_train", "n_test", "multitask",
         "explainers": {explainer: {<metric>: {"value", "low", "high", "n"}, ...,
                                    "family" (explainers.families), "description", "reference",
                                    "n_items", "subsample",
                                    "cost": {"forward_passes", "seconds"}, "parse_rate"?, "one_sided"?,
                                    "info"?}},
         "facts": [{"label", "value", "kind", "note", "headline", "group"}],
         "charts": [{"title", "kind", "rows", "labels", "axis"}],
         "tables": [{"title", "header", "rows", "lead"}],
         "notes": [str],
         "ground_truth": {...the benchmark's raw statistics, for provenance...},
         "self_vs_best_other", "self_vs_other", "self_vs": {explainer: pair}, "comparisons"?,
         "vector_controls"?: {control: pair of its base minus it (e.g. self - self-no-vector)}}}}

A pair is {"metric", "best_other", "difference": estimate, "n"}; an estimate is
{"value", "low", "high", "n"} (fractions; reports show percent where the metric says so).
"""

from __future__ import annotations

from typing import Any

from selfexplain.errors import ConfigError

SCHEMA_VERSION = 2


def check_results(results: dict[str, Any], where: str = "results") -> dict[str, Any]:
    """The results dict if its schema is this version's; a one-line error naming the version otherwise."""
    version = results.get("schema_version") if isinstance(results, dict) else None
    if version != SCHEMA_VERSION:
        found = "no schema_version (written before selfexplain 0.1 schema 2)" if version is None else \
            f"schema_version {version}"
        raise ConfigError(f"{where} has {found}; this selfexplain reads schema_version {SCHEMA_VERSION}: rerun the "
                          "run's command to rewrite it (finished steps are reused)")
    return results


def metric_specs(bench: dict[str, Any]) -> list[dict[str, Any]]:
    """The benchmark's declared metrics, the primary one first."""
    specs = list(bench.get("metrics") or [])
    return sorted(specs, key=lambda m: not m.get("primary"))


def metric_spec(bench: dict[str, Any], name: str) -> dict[str, Any]:
    for m in bench.get("metrics") or []:
        if m["name"] == name:
            return m
    return {"name": name, "label": name.replace("_", " "), "higher_is_better": True, "primary": False,
            "percent": True}


def metric_label(bench: dict[str, Any], name: str) -> str:
    return metric_spec(bench, name)["label"]


def higher_is_better(bench: dict[str, Any], name: str) -> bool:
    return bool(metric_spec(bench, name)["higher_is_better"])


def is_estimate(v: Any) -> bool:
    return isinstance(v, dict) and {"value", "low", "high"} <= v.keys()


def sort_key(bench: dict[str, Any], metric: str):
    """Key that sorts explainers best first on `metric` (its declared direction; NaN last)."""
    sign = -1.0 if higher_is_better(bench, metric) else 1.0

    def key(name: str) -> float:
        est = bench["explainers"][name].get(metric)
        v = est["value"] if is_estimate(est) else float("nan")
        return sign * v if v == v else float("inf")

    return key


def ranked_explainers(bench: dict[str, Any]) -> list[str]:
    """Explainer names, best first on the primary metric."""
    return sorted(bench.get("explainers", {}), key=sort_key(bench, bench["primary_metric"]))
