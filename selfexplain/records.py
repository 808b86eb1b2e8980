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

    def without(self, truth_keys: Iterable[str]) -> "QueryView":
        """What an explainer may read of this record when answering it: the record with its answer
        and the ground-truth context keys hidden (reading them raises GroundTruthHidden)."""
        hidden = frozenset(truth_keys)
        return QueryView(**{**{f: getattr(self, f) for f in self.__dataclass_fields__},
                            "context": HiddenContext(self.context, hidden)})

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("vector")
        data["has_vector"] = self.vector is not None
        return data


def split(records: Iterable[Record], name: str) -> list[Record]:
    return [r for r in records if r.split == name]


class GroundTruthHidden(KeyError):
    """An explainer read the ground truth of a query it is answering."""


class HiddenContext(dict):
    """A record's context with its ground-truth keys removed; reading one raises GroundTruthHidden."""

    def __init__(self, context: dict[str, Any], hidden: frozenset[str]):
        super().__init__({k: v for k, v in context.items() if k not in hidden})
        self.hidden = hidden

    def __missing__(self, key: str) -> Any:
        if key in self.hidden:
            raise GroundTruthHidden(f"context[{key!r}] is ground truth: explainers may not read it")
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.hidden:
            raise GroundTruthHidden(f"context[{key!r}] is ground truth: explainers may not read it")
        return super().get(key, default)


@dataclass
class QueryView(Record):
    """A record as an explainer answering it sees it: `answer` raises GroundTruthHidden."""

    def __getattribute__(self, name: str) -> Any:
        if name == "answer":
            raise GroundTruthHidden(f"record {object.__getattribute__(self, 'id')}: the answer is ground truth: "
                                    "explainers may not read it")
        return object.__getattribute__(self, name)
