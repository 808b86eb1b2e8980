"""The simulatability benchmark's own explanation sources: human explanations, the other model
prompted zero-shot, no explanation, and the leakage probe."""

from __future__ import annotations

from typing import Callable, Sequence

from selfexplain.benchmarks.simulatability.subject import instruction, probe_text
from selfexplain.explainers.base import Explainer, Explanation, Stopwatch
from selfexplain.models.generation import Decoding
from selfexplain.records import Record


class ContextExplainer(Explainer):
    """An explanation read off the record (no model runs): human, the probe, or none."""

    def __init__(self, name: str, description: str, text: Callable[[Record], str]):
        self.name, self.description, self._text = name, description, text

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        with Stopwatch() as sw:
            texts = [self._text(q) for q in queries]
        return [Explanation(t, 0, sw.per_item(len(queries))) for t in texts]


def human(name: str = "human") -> ContextExplainer:
    return ContextExplainer(name, "the dataset's human explanation (e-SNLI explanation_1, CoS-E open-ended)",
                            lambda q: q.context["human"])


def no_explanation() -> ContextExplainer:
    return ContextExplainer("no-explanation", "no explanation: the simulator sees the input and the counterfactual",
                            lambda q: "")


def leakage_probe() -> ContextExplainer:
    return ContextExplainer("leakage-probe", "only restates the subject's answer ('the answer is X.')",
                            lambda q: probe_text(q.context["answer_text"]))


def other_zero_shot(load, seed: int, decoding: Decoding) -> Explainer:
    """The other model, untrained, prompted exactly as the subject's zero-shot explainer."""
    from selfexplain.explainers.prompting import PromptedExplainer

    explainer = PromptedExplainer(load(), 0, instruction(), seed, decoding=decoding)
    explainer.name = "other-zero-shot"
    explainer.description = "the other model (untrained), prompted zero-shot to explain the subject's answer"
    return explainer
