"""Records: (query, answer) pairs about a subject, with provenance. Training and test data."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
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


def save_records(records: list[Record], directory: Path) -> None:
    """Write records.jsonl + vectors.safetensors atomically (temp files, then rename)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tmp_jsonl = directory / ".records.jsonl.tmp"
    with tmp_jsonl.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
    vectors = {r.id: r.vector.detach().cpu().float().contiguous() for r in records if r.vector is not None}
    tmp_vec = directory / ".vectors.safetensors.tmp"
    save_file(vectors or {"_empty": torch.zeros(1)}, str(tmp_vec))
    os.replace(tmp_vec, directory / "vectors.safetensors")
    os.replace(tmp_jsonl, directory / "records.jsonl")


def load_records(directory: Path) -> list[Record]:
    from safetensors.torch import load_file

    vectors = load_file(str(directory / "vectors.safetensors"))
    records = []
    with (directory / "records.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            data = json.loads(line)
            has_vector = data.pop("has_vector")
            data["provenance"] = Provenance(**data["provenance"])
            records.append(Record(**data, vector=vectors[data["id"]] if has_vector else None))
    return records


def split(records: Iterable[Record], name: str) -> list[Record]:
    return [r for r in records if r.split == name]
