"""What a benchmark is: how records are built, the answer format, and how answers are scored."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..config import RunConfig
from ..explainers.base import Explainer, Explanation
from ..models import LoadedModel
from ..records import Record


@dataclass
class GroundTruth:
    """A benchmark's records plus facts about them every report shows."""

    records: list[Record]
    stats: dict[str, Any] = field(default_factory=dict)


class Benchmark(ABC):
    """A task comparing explainers on ground truth computed on the subject itself."""

    name: str = "benchmark"
    description: str = ""
    primary_metric: str = "exact_match"

    @abstractmethod
    def build_records(self, subject: LoadedModel, config: RunConfig, progress=None) -> GroundTruth:
        """Run the technique on the subject and return train/test records."""

    @abstractmethod
    def score(self, records: Sequence[Record], explanations: Sequence[Explanation]) -> dict[str, list]:
        """Per-item scores, one list per metric, aligned with `records`."""

    @abstractmethod
    def summarize(self, records: Sequence[Record], scores: dict[str, list], seed: int) -> dict[str, Any]:
        """Metric estimates (with CIs) from per-item scores."""

    def instruction(self) -> str:
        """Instruction that precedes prompted (zero/few-shot) queries."""
        return ""

    def example_key(self, record: Record) -> str:
        """Answer kind used to balance few-shot examples."""
        return ""

    def heuristics(self) -> list[Explainer]:
        """Benchmark-specific trivial baselines."""
        return []


def balanced_sample(records: list[Record], key: Callable[[Record], Any], n: int,
                    rng: random.Random, strict: bool) -> list[Record]:
    """Up to n records with classes as equal as possible.

    strict: every class gets exactly the same count (test sets); otherwise the shortfall of a
    rare class is filled from the others (training sets, where data matters more than balance).
    """
    groups: dict[Any, list[Record]] = {}
    for r in records:
        groups.setdefault(key(r), []).append(r)
    for g in groups.values():
        rng.shuffle(g)
    per_class = n // max(1, len(groups))
    if strict:
        per_class = min([per_class] + [len(g) for g in groups.values()])
        picked = [r for g in groups.values() for r in g[:per_class]]
    else:
        picked = [r for g in groups.values() for r in g[:per_class]]
        rest = [r for g in groups.values() for r in g[per_class:]]
        rng.shuffle(rest)
        picked += rest[: max(0, n - len(picked))]
    rng.shuffle(picked)
    return picked
