"""LoRA explainers: `self` (the subject + adapter) and `other` (a different model + adapter)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Sequence

from selfexplain.models.generation import Decoding, encode_query, pick_answers
from selfexplain.models.loading import LoadedModel
from selfexplain.records import Record
from selfexplain.training import Projector, TrainConfig, load_trained, train_explainer
from selfexplain.explainers.base import Explainer, Explanation, Stopwatch


class LoRAExplainer(Explainer):
    """A model fine-tuned (LoRA + vector projector) on the subject's ground-truth records."""

    def __init__(self, name: str, load: Callable[[], LoadedModel], train_config: TrainConfig,
                 output_dir: Path, description: str = "", decoding: Decoding = Decoding(), progress=None):
        self.name = name
        self.description = description
        self._load = load
        self.train_config = train_config
        self.output_dir = output_dir
        self.decoding = decoding
        self.progress = progress
        self.loaded: LoadedModel | None = None
        self.projector: Projector | None = None

    def fit(self, train: Sequence[Record]) -> None:
        """Train on `train`, or load the adapter a previous (interrupted) run saved for exactly
        these records and this config."""
        base = self._load()
        dims = {r.vector.shape[-1] for r in train if r.vector is not None}
        vector_dim = dims.pop() if dims else None
        saved = load_trained(base, train, self.train_config, self.output_dir, vector_dim)
        if saved is not None:
            self.loaded, self.projector = saved
            return
        self.loaded, self.projector = train_explainer(
            base, train, self.train_config, self.output_dir, vector_dim=vector_dim, progress=self.progress)

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        if self.loaded is None:
            raise RuntimeError(f"explainer '{self.name}' must be fitted before explain()")
        prompts = [encode_query(self.loaded, q.query) for q in queries]
        with Stopwatch() as sw:
            # An answer ends where training taught it to: EOS.
            answers = pick_answers(self.loaded, prompts, queries, self.decoding, [self.loaded.tokenizer.eos_token_id],
                                   [q.vector for q in queries], self.projector)
        per = sw.per_item(len(queries))
        return [Explanation(text, forward_passes=passes, seconds=per, probabilities=probs)
                for text, passes, probs in answers]


def copy_of(loaded: LoadedModel) -> LoadedModel:
    """A deep copy, so training an adapter never alters the subject used for ground truth."""
    return LoadedModel(copy.deepcopy(loaded.model), loaded.tokenizer, loaded.name, loaded.source,
                       loaded.placeholder_id)

