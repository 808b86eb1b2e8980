"""Explainers: everything that answers queries about the subject, behind one signature."""

from selfexplain.explainers.base import Explainer, Explanation
from selfexplain.explainers.baselines import HeuristicExplainer, MajorityExplainer, NearestNeighbour
from selfexplain.explainers.lora import LoRAExplainer
from selfexplain.explainers.prompting import PromptedExplainer

EXPLAINERS = {  # cheapest first, so partial results appear early
    "never-changes": "patching/ablation heuristic: the answer never changes",
    "layer-token-prior": "patching heuristic: training change rate per (layer block, token, relation) "
                         "+ the subject's unpatched answers",
    "majority": "ablation heuristic: the most frequent answer kind in training",
    "hint-follow": "ablation heuristic: 'changes' exactly when the subject's hinted answer is the hinted option",
    "nearest-neighbour": "the answer of the most similar training query (TF-IDF)",
    "zero-shot": "the untrained subject, prompted with the instruction only",
    "4-shot": "the untrained subject, prompted with 4 solved training examples",
    "self": "the subject + a LoRA adapter trained on the subject's ground truth",
    "other": "a different model (+ LoRA + vector projector) trained on the same records",
    "human": "rationales: the human evidence spans (ERASER annotators), unranked",
    "random": "rationales: document words in a seeded random order",
    "attention-last": "last-layer attention (ablation: mass on the hint, thresholded; rationales: ranked words)",
    "attention-rollout": "attention rollout (ablation: mass on the hint, thresholded; rationales: ranked words)",
    "integrated-gradients": "integrated gradients (ablation: mass on the hint, thresholded; rationales: ranked words)",
    "occlusion": "word occlusion (ablation: mass on the hint, thresholded; rationales: ranked words, the "
                 "training target itself, shown as the ceiling)",
    "lime": "LIME (ablation: mass on the hint, thresholded; rationales: ranked words)",
    "kernel-shap": "KernelSHAP (ablation: mass on the hint, thresholded; rationales: ranked words)",
}
# Explainers every benchmark runs; the others come from Benchmark.baselines().
GENERIC_EXPLAINERS = {"self", "other", "zero-shot", "4-shot", "nearest-neighbour"}


def list_explainers() -> dict[str, str]:
    return dict(EXPLAINERS)


__all__ = ["EXPLAINERS", "GENERIC_EXPLAINERS", "Explainer", "Explanation", "HeuristicExplainer", "LoRAExplainer",
           "MajorityExplainer", "NearestNeighbour", "PromptedExplainer", "list_explainers"]
