"""Withheld-vector controls: `self-no-vector` and `other-no-vector` are trained and evaluated
exactly like `self` and `other`, with every injected vector replaced by zeros, so the
placeholder's input embedding is one fixed neutral vector (zero) for every query. Nothing else
changes (same records, batches, LoRA layers, projector), so `self - self-no-vector` on the same
items is the measured contribution of the vector (Li et al. 2025, Qwen3-8B: 64.0 -> 59.9).
They apply to any benchmark whose records carry `Record.vector`.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch

from selfexplain.explainers.base import Explanation
from selfexplain.explainers.lora import LoRAExplainer
from selfexplain.records import Record

SUFFIX = "-no-vector"

# name -> (family, description) of each control; its base explainer is the name without SUFFIX.
CONTROL_EXPLAINERS: dict[str, tuple[str, str]] = {
    "self-no-vector": ("self", "control: self trained and evaluated with every injected vector withheld (the "
                               "placeholder embedding set to zero)"),
    "other-no-vector": ("other", "control: other trained and evaluated with every injected vector withheld (the "
                                 "placeholder embedding set to zero)"),
}


def base_of(name: str) -> str:
    """The explainer a control withholds the vector from ('self-no-vector' -> 'self'); else `name`."""
    return name.removesuffix(SUFFIX) if name in CONTROL_EXPLAINERS else name


def withheld(records: Sequence[Record]) -> list[Record]:
    """Shallow copies of `records` whose vectors are zeros of the same shape (records without a
    vector unchanged). Works on the query views explainers receive: the answer is never read."""
    out = []
    for r in records:
        if r.vector is None:
            out.append(r)
            continue
        c = copy.copy(r)
        c.vector = torch.zeros_like(r.vector)
        out.append(c)
    return out


class WithheldVectorExplainer(LoRAExplainer):
    """A LoRA explainer that never sees an injected vector, in training or when answering."""

    def fit(self, train: Sequence[Record]) -> None:
        super().fit(withheld(train))

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        return super().explain(withheld(queries))
