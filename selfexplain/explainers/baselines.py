"""Non-learned baselines: nearest neighbour over training records, and fixed heuristics."""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Callable, Sequence

import numpy as np

from selfexplain.records import Record, VECTOR_MARKER
from selfexplain.explainers.base import Explainer, Explanation, Stopwatch

_WORD = re.compile(r"\w+")


def _bag(text: str) -> Counter:
    return Counter(w.lower() for w in _WORD.findall(text.replace(VECTOR_MARKER, " ")))


class NearestNeighbour(Explainer):
    """Returns the answer of the most similar training query (TF-IDF cosine on the text)."""

    name = "nearest-neighbour"
    description = "answer of the most similar training query (TF-IDF cosine)"

    def fit(self, train: Sequence[Record]) -> None:
        bags = [_bag(r.query) for r in train]
        df = Counter(w for b in bags for w in b)
        n = len(bags)
        self.idf = {w: math.log((1 + n) / (1 + c)) + 1 for w, c in df.items()}
        self.vocab = {w: i for i, w in enumerate(sorted(df))}
        self.matrix = np.stack([self._vec(b) for b in bags]) if bags else np.zeros((0, 0))
        self.answers = [r.answer for r in train]

    def _vec(self, bag: Counter) -> np.ndarray:
        v = np.zeros(len(self.vocab), dtype=np.float32)
        for w, c in bag.items():
            if w in self.vocab:
                v[self.vocab[w]] = c * self.idf[w]
        norm = np.linalg.norm(v)
        return v / norm if norm else v

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        with Stopwatch() as sw:
            q = np.stack([self._vec(_bag(r.query)) for r in queries])
            best = (q @ self.matrix.T).argmax(axis=1)
        return [Explanation(self.answers[int(i)], 0, sw.per_item(len(queries))) for i in best]


class HeuristicExplainer(Explainer):
    """A fixed rule over the record's context, e.g. "the answer never changes"."""

    def __init__(self, name: str, rule: Callable[[Record], str], description: str = "",
                 forward_passes: int = 0):
        self.name = name
        self.forward_passes = forward_passes
        self.rule = rule
        self.description = description

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        with Stopwatch() as sw:
            texts = [self.rule(q) for q in queries]
        return [Explanation(t, self.forward_passes, sw.per_item(len(queries))) for t in texts]


class MajorityExplainer(Explainer):
    """Always the most frequent answer kind (context['label']) of the training records.

    `answer(record, changed)` turns the kind into this record's answer text.
    """

    name = "majority"
    description = "the most frequent answer kind in training"

    def __init__(self, answer: Callable[[Record, bool], str], forward_passes: int = 0):
        self.answer = answer
        self.forward_passes = forward_passes
        self.changed = False

    def fit(self, train: Sequence[Record]) -> None:
        labels = Counter(r.context.get("label") for r in train)
        self.changed = labels["changed"] > labels["unchanged"]

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        with Stopwatch() as sw:
            texts = [self.answer(q, self.changed) for q in queries]
        return [Explanation(t, self.forward_passes, sw.per_item(len(queries))) for t in texts]
