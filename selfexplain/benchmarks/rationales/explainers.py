"""Rationale explainers that are not models: human rationales, random words, attribution maps.

Each answers like every explainer of the rationales benchmark, a ranked list of document words
("word@index, ..."; see rationale_text). The benchmark fills any ranking shorter than a length
it scores with the same seeded random words for every explainer, so all are compared at equal
rationale length.
"""

from __future__ import annotations

import random
import zlib
from pathlib import Path
from typing import Callable, Sequence

from selfexplain.techniques.attribution import METHODS, PERTURBATION_METHODS, Attribution, Attributor
from selfexplain.models.loading import LoadedModel
from selfexplain.benchmarks.rationales.inputs import RationaleInput
from selfexplain.benchmarks.rationales.text import format_ranking
from selfexplain.records import Record
from selfexplain.explainers.base import Explainer, Explanation

InputOf = Callable[[Record], tuple[RationaleInput, int]]  # (input, the subject's predicted option)


def item_seed(seed: int, item_id: str, purpose: str) -> int:
    """A seed fixed by (seed, item, purpose): the same on every run and machine."""
    return zlib.crc32(f"{seed}|{item_id}|{purpose}".encode())


def item_rng(seed: int, item_id: str, purpose: str) -> random.Random:
    """A random stream fixed by (seed, item, purpose)."""
    return random.Random(item_seed(seed, item_id, purpose))


class _SeededOrder(Explainer):
    """Document words in an order drawn from a per-item seeded stream: no model runs."""

    purpose = ""

    def __init__(self, input_of: InputOf, seed: int = 0):
        self.input_of = input_of
        self.seed = seed

    def words(self, inp: RationaleInput) -> list[int]:
        raise NotImplementedError

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        out = []
        for r in queries:
            inp, _ = self.input_of(r)
            words = self.words(inp)
            item_rng(self.seed, inp.item_id, self.purpose).shuffle(words)
            out.append(Explanation(format_ranking(inp.words, words, with_index=True), 0, 0.0))
        return out


class HumanRationale(_SeededOrder):
    """The words inside the human evidence spans (ERASER annotators), which carry no ranking:
    they are listed in a seeded random order, so shorter lengths take a random subset."""

    name = "human"
    description = "human rationales (ERASER evidence spans), in random order within the rationale"
    purpose = "human"

    def words(self, inp: RationaleInput) -> list[int]:
        return sorted(inp.human_words)


class RandomRationale(_SeededOrder):
    """Every document word in a seeded random order: the floor every metric is normalised by."""

    name = "random"
    description = "document words in a random order (seeded per item)"
    purpose = "random-explainer"

    def words(self, inp: RationaleInput) -> list[int]:
        return list(range(len(inp.words)))


def word_scores(attribution: Attribution, inp: RationaleInput) -> list[float]:
    """One score per document word: perturbation methods score words directly (every token of
    a word holds the word's score); gradient and attention scores are summed over its tokens."""
    scores = [0.0] * len(inp.words)
    grouped = attribution.method in PERTURBATION_METHODS
    for p in range(inp.doc_start, inp.doc_end):
        w = inp.word_groups[p]
        if grouped:
            scores[w] = attribution.scores[p]
        else:
            scores[w] += attribution.scores[p]
    return scores


def rank_words(scores: Sequence[float]) -> list[int]:
    """Word indices by score, highest (most support for the predicted option) first; ties go
    to the earlier word."""
    return sorted(range(len(scores)), key=lambda w: (-float(scores[w]), w))


class AttributionRanking(Explainer):
    """Words ranked by an attribution method's scores for the subject's predicted option
    (its first token: attribution explains one next token). `max_items` asks the run for a
    seeded test subsample when the method is slow."""

    def __init__(self, method: str, subject: LoadedModel, input_of: InputOf, cache_dir: Path | None = None,
                 params: dict | None = None, max_items: int | None = None, name: str | None = None):
        self.method = method
        self.name = name or method.replace("_", "-")
        self.description = f"document words ranked by {METHODS[method]}"
        self.input_of = input_of
        self.attributor = Attributor(subject, cache_dir=cache_dir)
        self.params = params or {}
        self.max_items = max_items

    def info(self) -> dict:
        return {"method": self.method, "params": self.params}

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        pairs = [self.input_of(r) for r in queries]
        results = self.attributor.attribute([inp.attribution_input(c) for inp, c in pairs], self.method,
                                            **self.params)
        # a cached attribution keeps the cost it had when it was computed
        return [Explanation(format_ranking(inp.words, rank_words(word_scores(res, inp)), with_index=True),
                            res.forward_passes, res.seconds) for (inp, _), res in zip(pairs, results)]
