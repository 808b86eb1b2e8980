"""Metrics with 95% bootstrap confidence intervals (definitions in notes.md / docs)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

N_BOOTSTRAP = 2000


@dataclass(frozen=True)
class Estimate:
    """A metric value with its 95% percentile-bootstrap interval."""

    value: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{100 * self.value:.1f} [{100 * self.low:.1f}, {100 * self.high:.1f}]"


def _resample_indices(n: int, seed: int, n_boot: int = N_BOOTSTRAP) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_mean(values: Sequence[float], seed: int = 0) -> Estimate:
    """Mean of per-item scores with a percentile bootstrap CI."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    means = x[_resample_indices(len(x), seed)].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return Estimate(float(x.mean()), float(lo), float(hi), len(x))


def macro_f1(truth: Sequence[bool], pred: Sequence[bool | None]) -> float:
    """Macro-F1 over the two classes {changed, unchanged}; `None` (unparseable) is never right."""
    scores = []
    for cls in (True, False):
        tp = sum(1 for t, p in zip(truth, pred) if p is cls and t is cls)
        fp = sum(1 for t, p in zip(truth, pred) if p is cls and t is not cls)
        fn = sum(1 for t, p in zip(truth, pred) if t is cls and p is not cls)
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def bootstrap_macro_f1(truth: Sequence[bool], pred: Sequence[bool | None], seed: int = 0) -> Estimate:
    n = len(truth)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    t = np.asarray(truth, dtype=object)
    p = np.asarray(pred, dtype=object)
    stats = [macro_f1(list(t[idx]), list(p[idx])) for idx in _resample_indices(n, seed, 1000)]
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return Estimate(macro_f1(truth, pred), float(lo), float(hi), n)


def paired_difference(a: Sequence[float], b: Sequence[float], seed: int = 0) -> Estimate:
    """Mean of a - b over the same items, with a paired bootstrap CI."""
    x = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return bootstrap_mean(x, seed)


def unpaired_difference(a: Sequence[float], b: Sequence[float], seed: int = 0) -> Estimate:
    """Mean of a minus mean of b over different items, each side resampled independently."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) == 0 or len(y) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    diffs = x[_resample_indices(len(x), seed)].mean(axis=1) - y[_resample_indices(len(y), seed + 1)].mean(axis=1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return Estimate(float(x.mean() - y.mean()), float(lo), float(hi), min(len(x), len(y)))


def bootstrap_macro_mean(values: Sequence[float], groups: Sequence[str], seed: int = 0) -> Estimate:
    """Mean over groups (e.g. datasets) of each group's mean, with a stratified bootstrap CI:
    items are resampled within their group, so every group keeps its weight and its size.
    `n` is the number of items."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    names = sorted(set(groups))
    members = [np.flatnonzero(np.asarray(groups, dtype=object) == g) for g in names]
    value = float(np.mean([x[m].mean() for m in members]))
    boots = np.mean([x[m][_resample_indices(len(m), seed + k)].mean(axis=1) for k, m in enumerate(members)], axis=0)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return Estimate(value, float(lo), float(hi), len(x))


def format_estimate(est: dict[str, float]) -> str:
    """'value [low, high]' in percent: the one text form of an estimate in every report."""
    return f"{100 * est['value']:.1f} [{100 * est['low']:.1f}, {100 * est['high']:.1f}]"


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[float], n_bins: int = 10) -> float:
    """ECE (Guo et al. 2017; as in Binder et al. 2024): items binned by the confidence of their
    answer into `n_bins` equal-width bins; the item-weighted mean |accuracy - mean confidence|."""
    c, y = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    if len(c) == 0:
        return float("nan")
    bins = np.minimum((c * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        m = bins == b
        total += m.sum() * abs(y[m].mean() - c[m].mean())
    return float(total / len(c))


def bootstrap_ece(confidence: Sequence[float], correct: Sequence[float], seed: int = 0) -> Estimate:
    """ECE with a percentile-bootstrap CI over items."""
    c, y = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    if len(c) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    stats = [expected_calibration_error(c[idx], y[idx]) for idx in _resample_indices(len(c), seed, 1000)]
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return Estimate(expected_calibration_error(c, y), float(lo), float(hi), len(c))


def reliability(confidence: Sequence[float], correct: Sequence[float], n_bins: int = 10) -> list[dict[str, float]]:
    """Per non-empty confidence bin: its range, item count, mean confidence and accuracy."""
    c, y = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    bins = np.minimum((c * n_bins).astype(int), n_bins - 1)
    return [{"low": b / n_bins, "high": (b + 1) / n_bins, "n": int((bins == b).sum()),
             "confidence": float(c[bins == b].mean()), "accuracy": float(y[bins == b].mean())}
            for b in np.unique(bins)]


def pooled_mean(values_by_seed: Sequence[Sequence[float]], seed: int = 0, n_boot: int = N_BOOTSTRAP) -> Estimate:
    """Mean over seeds of each seed's item mean, with a two-level bootstrap CI: each replicate
    draws seeds with replacement, then items with replacement within each drawn seed, so the
    interval covers both the training draw (seed) and the test items. One seed: `bootstrap_mean`.
    `n` is the number of items over all seeds."""
    groups = [np.asarray(v, dtype=float) for v in values_by_seed if len(v)]
    if not groups:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    if len(groups) == 1:
        return bootstrap_mean(groups[0], seed)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(groups), size=(n_boot, len(groups)))  # seeds of each replicate
    slot_means = np.empty(drawn.shape)
    for slot in range(drawn.shape[1]):  # every drawn seed gets its own item resample
        for k, g in enumerate(groups):
            rows = np.flatnonzero(drawn[:, slot] == k)
            slot_means[rows, slot] = g[rng.integers(0, len(g), size=(len(rows), len(g)))].mean(axis=1)
    boots = slot_means.mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return Estimate(float(np.mean([g.mean() for g in groups])), float(lo), float(hi), sum(len(g) for g in groups))


def pooled_paired_difference(a_by_seed: Sequence[Sequence[float]], b_by_seed: Sequence[Sequence[float]],
                             seed: int = 0) -> Estimate:
    """Mean over seeds of a - b on the same items (paired within each seed), resampling seeds
    and items (`pooled_mean`)."""
    return pooled_mean([np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
                        for a, b in zip(a_by_seed, b_by_seed)], seed)


def seed_spread(means: Sequence[float]) -> dict[str, float]:
    """How much a score moves between seeds: standard deviation (ddof=1), min and max of the per-seed values."""
    x = np.asarray([m for m in means if m == m], dtype=float)
    if len(x) == 0:
        return {"sd": float("nan"), "min": float("nan"), "max": float("nan"), "n_seeds": 0}
    return {"sd": float(x.std(ddof=1)) if len(x) > 1 else 0.0, "min": float(x.min()), "max": float(x.max()),
            "n_seeds": int(len(x))}
