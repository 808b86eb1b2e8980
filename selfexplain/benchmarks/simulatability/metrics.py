"""Simulatability metrics: counterfactual simulation accuracy, its gain over no explanation, and
LAS (Hase et al. 2020, arXiv 2010.04119) with leaking / non-leaking groups.

Per item i and explanation e: acc_e(i) = share of i's counterfactuals on which the simulator
given (input, e, counterfactual) picks the subject's actual answer; acc_0(i) the same without e;
gain(i) = acc_e(i) - acc_0(i). e leaks when the simulator given e alone (input hidden) picks the
subject's answer on the original input. LAS = the mean, over the groups {leaking, non-leaking}
that have items, of the group's mean gain: an explanation cannot score by restating the answer
alone, because leaking items count only as one group however many there are.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from selfexplain.metrics import N_BOOTSTRAP, Estimate


def las(gains: Sequence[float], leaks: Sequence[float]) -> float:
    """Leakage-adjusted simulatability: mean over the non-empty leak groups of the mean gain."""
    g, k = np.asarray(gains, dtype=float), np.asarray(leaks, dtype=float) > 0.5
    groups = [g[k], g[~k]]
    means = [float(x.mean()) for x in groups if len(x)]
    return float(np.mean(means)) if means else math.nan


def _resample(n: int, seed: int, n_boot: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def macro_las(gains: Sequence[float], leaks: Sequence[float], groups: Sequence[str], seed: int = 0,
              n_boot: int = N_BOOTSTRAP) -> Estimate:
    """Mean over datasets of each dataset's LAS, with a bootstrap CI resampling items within each
    dataset (the groups keep their sizes)."""
    g, k = np.asarray(gains, dtype=float), np.asarray(leaks, dtype=float)
    if len(g) == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    names = sorted(set(groups))
    members = [np.flatnonzero(np.asarray(groups, dtype=object) == name) for name in names]
    value = float(np.mean([las(g[m], k[m]) for m in members]))
    boots = np.zeros(n_boot)
    for j, m in enumerate(members):
        idx = m[_resample(len(m), seed + j, n_boot)]
        boots += np.array([las(g[row], k[row]) for row in idx]) / len(members)
    lo, hi = np.nanpercentile(boots, [2.5, 97.5])
    return Estimate(value, float(lo), float(hi), len(g))


def paired_las_difference(gains_a: Sequence[float], leaks_a: Sequence[float], gains_b: Sequence[float],
                          leaks_b: Sequence[float], seed: int = 0, n_boot: int = N_BOOTSTRAP) -> Estimate:
    """LAS(a) - LAS(b) over the same items, items resampled jointly (paired bootstrap)."""
    ga, ka, gb, kb = (np.asarray(x, dtype=float) for x in (gains_a, leaks_a, gains_b, leaks_b))
    if len(ga) == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    value = las(ga, ka) - las(gb, kb)
    boots = np.array([las(ga[i], ka[i]) - las(gb[i], kb[i]) for i in _resample(len(ga), seed, n_boot)])
    lo, hi = np.nanpercentile(boots, [2.5, 97.5])
    return Estimate(float(value), float(lo), float(hi), len(ga))
