"""Zero-shot and k-shot self-report: the untrained subject, prompted with solved examples."""

from __future__ import annotations

import random
from typing import Sequence

import torch

from selfexplain.models.generation import Decoding, encode_query, pick_answers
from selfexplain.models.loading import LoadedModel
from selfexplain.records import Record
from selfexplain.training import make_projector
from selfexplain.explainers.base import Explainer, Explanation, Stopwatch

EXAMPLE_SEPARATOR = "\n\n"  # after the instruction and after each solved example's answer


class PromptedExplainer(Explainer):
    """The subject as it is, given an instruction and `k` solved training examples.

    Examples are drawn once (seeded), balanced over answer kinds via `example_key`, and the
    same k examples precede every query. Injected vectors are normalised like the trained
    explainers' so the query is identical for every explainer.
    """

    def __init__(self, subject: LoadedModel, k: int, instruction: str, seed: int = 0,
                 example_key=None, decoding: Decoding = Decoding()):
        self.subject = subject
        self.k = k
        self.name = "zero-shot" if k == 0 else f"{k}-shot"
        self.description = f"untrained subject prompted with {k} solved examples"
        self.instruction = instruction
        self.seed = seed
        self.example_key = example_key or (lambda r: "")
        self.decoding = decoding
        self.examples: list[Record] = []

    def fit(self, train: Sequence[Record]) -> None:
        rng = random.Random(self.seed)
        by_key: dict[str, list[Record]] = {}
        for r in train:
            by_key.setdefault(self.example_key(r), []).append(r)
        keys = sorted(by_key)
        picked = []
        while len(picked) < self.k and keys:
            for key in keys:
                if len(picked) < self.k and by_key[key]:
                    picked.append(by_key[key].pop(rng.randrange(len(by_key[key]))))
        rng.shuffle(picked)
        self.examples = picked

    def prefix(self) -> str:
        """Instruction and solved examples: identical for every query, so run once (KV cache)."""
        shots = "".join(f"{ex.query} {ex.answer}{EXAMPLE_SEPARATOR}" for ex in self.examples)
        return f"{self.instruction}{EXAMPLE_SEPARATOR}{shots}"

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        projector, vectors, prefix_vectors = None, None, None
        if any(q.vector is not None for q in queries):
            projector = make_projector(self.subject, queries[0].vector.shape[-1])
            vectors = [q.vector for q in queries]
            if self.examples:
                prefix_vectors = torch.stack([ex.vector for ex in self.examples])
        prefix = encode_query(self.subject, self.prefix())
        prompts = [encode_query(self.subject, q.query, add_special_tokens=False) for q in queries]
        with Stopwatch() as sw:
            # An answer ends as the solved examples' answers do: with the blank line between examples.
            end = self.subject.tokenizer(EXAMPLE_SEPARATOR, add_special_tokens=False)["input_ids"]
            answers = pick_answers(self.subject, prompts, queries, self.decoding, end, vectors, projector,
                                   prefix=prefix, prefix_vectors=prefix_vectors)
        per = sw.per_item(len(queries))
        # Cost counts the full prompt (prefix included), as a user without a cache would pay.
        return [Explanation(text, forward_passes=passes, seconds=per, probabilities=probs)
                for text, passes, probs in answers]
