"""Explainers: everything that answers queries about the subject, behind one signature."""

from .base import Explainer, Explanation
from .baselines import HeuristicExplainer, NearestNeighbour
from .lora import LoRAExplainer
from .prompting import PromptedExplainer

EXPLAINERS = {  # cheapest first, so partial results appear early
    "never-changes": "patching/ablation heuristic: the answer never changes",
    "layer-token-prior": "patching heuristic: training change rate per (layer block, token, relation) "
                         "+ the subject's unpatched answers",
    "nearest-neighbour": "the answer of the most similar training query (TF-IDF)",
    "zero-shot": "the untrained subject, prompted with the instruction only",
    "4-shot": "the untrained subject, prompted with 4 solved training examples",
    "self": "the subject + a LoRA adapter trained on the subject's ground truth",
    "other": "a different model (+ LoRA + vector projector) trained on the same records",
}


def list_explainers() -> dict[str, str]:
    return dict(EXPLAINERS)


__all__ = ["EXPLAINERS", "Explainer", "Explanation", "HeuristicExplainer", "LoRAExplainer",
           "NearestNeighbour", "PromptedExplainer", "list_explainers"]
