"""The one call signature every explainer shares: records in, Explanations out."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from selfexplain.records import Record


@dataclass
class Explanation:
    """An explainer's answer to one query, with what it cost, plus the structure behind it.

    `text` is what the explainer says (always set: the report shows it). Where the benchmark's
    answers form a closed set, `probabilities` holds the explainer's probability of each candidate
    (for calibration); where the answer is a rationale, `positions` holds the ranked input
    positions it names, so attribution baselines hand over positions, not text to parse back.
    `fields` carries any other structured output (free-form, JSON-serialisable).
    """

    text: str
    forward_passes: float
    seconds: float
    probabilities: dict[str, float] | None = None
    positions: list[int] | None = None
    fields: dict[str, Any] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def structured(self) -> dict[str, Any] | None:
        """The structured fields that are set (what the store keeps beside the text), or None."""
        out = {k: v for k, v in (("probabilities", self.probabilities), ("positions", self.positions),
                                 ("fields", self.fields)) if v is not None}
        return out or None


class Explainer(ABC):
    """Answers queries about the subject. Benchmarks never special-case a source.

    `fit` sees only training records; `explain` sees test records but must read only
    `query`, `vector` and `context` (never `answer`).
    """

    name: str = "explainer"
    description: str = ""

    def fit(self, train: Sequence[Record]) -> None:  # noqa: B027 - optional hook
        """Learn from training records (no-op for untrained explainers)."""

    @abstractmethod
    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        ...


class Stopwatch:
    """Per-item wall time of a batch of explanations."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start

    def per_item(self, n: int) -> float:
        return self.seconds / max(1, n)
