"""Human-centric saliency as a change predictor: attribution mass on the tokens an
intervention removes, turned into "changed" / "unchanged" by a threshold fitted on training.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from selfexplain.techniques.attribution import METHODS, AttributionInput, Attributor
from selfexplain.models.loading import LoadedModel
from selfexplain.records import Record
from selfexplain.explainers.base import Explainer, Explanation

ToInput = Callable[[Record], tuple[AttributionInput, list[int]]]


def fit_threshold(masses: Sequence[float], changed: Sequence[bool]) -> float:
    """The cut on mass that maximises balanced accuracy on (mass, changed) pairs.

    Candidates are midpoints between sorted masses (plus both ends); ties go to the lowest cut.
    """
    x = np.asarray(masses, dtype=float)
    y = np.asarray(changed, dtype=bool)
    values = np.unique(x)
    cuts = np.concatenate([[values[0] - 1e-9], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-9]])
    best, best_score = float(cuts[0]), -1.0
    for cut in cuts:
        pred = x > cut
        recalls = [float((pred[y == c] == c).mean()) for c in (True, False) if (y == c).any()]
        score = float(np.mean(recalls))
        if score > best_score + 1e-12:
            best, best_score = float(cut), score
    return best


def _balanced_accuracy(masses: Sequence[float], changed: Sequence[bool], cut: float) -> float:
    x, y = np.asarray(masses, dtype=float), np.asarray(changed, dtype=bool)
    return float(np.mean([((x[y == c] > cut) == c).mean() for c in (True, False) if (y == c).any()]))


class AttributionThreshold(Explainer):
    """LIME / KernelSHAP / IG / occlusion / attention as a baseline on change-prediction tasks.

    For each record, `to_input` gives the attribution input (target = the subject's own answer)
    and the positions an intervention would remove; the explainer predicts "changed" when
    their share of |attribution| exceeds a threshold fitted on up to `n_fit` training records
    (balanced by label), and `predict(record, changed)` turns that into an answer.
    `max_items` (= n_test) tells the run to evaluate a balanced test subsample (slow methods);
    0 means every record.
    """

    def __init__(self, method: str, subject: LoadedModel, to_input: ToInput,
                 predict: Callable[[Record, bool], str], cache_dir: Path | None = None,
                 n_test: int = 100, n_fit: int = 50, seed: int = 0, params: dict | None = None):
        self.method = method
        self.name = method.replace("_", "-")
        self.description = f"share of {METHODS[method]} mass on the removed tokens, thresholded"
        self.subject = subject
        self.to_input = to_input
        self.predict = predict
        self.attributor = Attributor(subject, cache_dir=cache_dir)
        self.n_fit = n_fit
        self.max_items = n_test or None
        self.seed = seed
        self.params = params or {}
        self.threshold = 0.5
        self.fit_stats: dict = {}

    def _masses(self, records: Sequence[Record], progress=None):
        pairs = [self.to_input(r) for r in records]
        results = self.attributor.attribute([p[0] for p in pairs], self.method, progress=progress, **self.params)
        return [res.mass(pos) for res, (_, pos) in zip(results, pairs)], results

    def fit(self, train: Sequence[Record]) -> None:
        rng = random.Random(self.seed)
        by_label: dict[str, list[Record]] = {}
        for r in train:
            by_label.setdefault(r.context["label"], []).append(r)
        per_label = (self.n_fit or len(train)) // max(1, len(by_label))
        picked = [r for label in sorted(by_label) for r in rng.sample(by_label[label], min(per_label, len(by_label[label])))]
        masses, _ = self._masses(picked)
        self.threshold = fit_threshold(masses, [r.context["changed"] for r in picked])
        self.fit_stats = {"n_fit": len(picked), "threshold": self.threshold, "params": self.params,
                          "fit_balanced_accuracy": _balanced_accuracy(masses, [r.context["changed"] for r in picked],
                                                                      self.threshold)}

    def info(self) -> dict:
        """What the report shows next to this baseline's scores."""
        return {"method": self.method, **self.fit_stats}

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        masses, results = self._masses(queries)
        # The attribution's rows include a clean run, which also gives the subject's own answer.
        return [Explanation(self.predict(r, m > self.threshold), forward_passes=res.forward_passes,
                            seconds=res.seconds)
                for r, m, res in zip(queries, masses, results)]
