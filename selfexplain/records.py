"""Records: (query, answer) pairs about a subject, with provenance. Training and test data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import torch

# Where a query carries an injected vector; tokenized as the model's placeholder token.
VECTOR_MARKER = "<<vector>>"


@dataclass(frozen=True)
class Provenance:
    """How a record's ground truth was computed, so anyone can recompute it."""

    subject: str
    technique: str
    params: dict[str, Any]
    seed: int


@dataclass
class Record:
    """One (query, answer) pair about the subject.

    `group` is the split key (e.g. the subject entity): no group is on both sides of a split.
    `vector` is injected at VECTOR_MARKER in `query` (None when the query has no marker).
    `context` is what non-learned baselines may read (e.g. the subject's unpatched answer).
    """

    id: str
    benchmark: str
    split: str
    group: str
    query: str
    answer: str
    provenance: Provenance
    context: dict[str, Any] = field(default_factory=dict)
    vector: torch.Tensor | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("vector")
        data["has_vector"] = self.vector is not None
        return data


def split(records: Iterable[Record], name: str) -> list[Record]:
    return [r for r in records if r.split == name]
