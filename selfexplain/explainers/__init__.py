"""Explainers: everything that answers queries about the subject, behind one signature.

The generic explainers below run on any benchmark that lists them (`Benchmark.generic_explainers`);
every other explainer is a baseline a benchmark declares itself (`Benchmark.baselines()`).
"""

from selfexplain.explainers.base import Explainer, Explanation
from selfexplain.explainers.baselines import HeuristicExplainer, MajorityExplainer, NearestNeighbour
from selfexplain.explainers.families import FAMILIES
from selfexplain.explainers.lora import LoRAExplainer
from selfexplain.explainers.prompting import PromptedExplainer
from selfexplain.explainers.withheld import CONTROL_EXPLAINERS, WithheldVectorExplainer, base_of

# name -> (family, description); cheapest first, so partial results appear early.
GENERIC_EXPLAINERS: dict[str, tuple[str, str]] = {
    "nearest-neighbour": ("heuristic", "the answer of the most similar training query (TF-IDF)"),
    "zero-shot": ("untrained", "the untrained subject, prompted with the instruction only"),
    "4-shot": ("untrained", "the untrained subject, prompted with 4 solved training examples"),
    "self": ("self", "the subject + a LoRA adapter trained on the subject's ground truth"),
    "other": ("other", "a different model (+ LoRA + vector projector) trained on the same records"),
}


def list_explainers() -> dict[str, str]:
    """Every explainer name: the generic ones, then each registered benchmark's baselines."""
    from selfexplain.benchmarks import all_baselines

    out = {name: desc for name, (_, desc) in {**GENERIC_EXPLAINERS, **CONTROL_EXPLAINERS}.items()}
    for name, specs in all_baselines().items():
        out[name] = "; ".join(f"{bench}: {spec.description}" for bench, spec in specs)
    return out


__all__ = ["CONTROL_EXPLAINERS", "FAMILIES", "GENERIC_EXPLAINERS", "Explainer", "Explanation", "HeuristicExplainer",
           "LoRAExplainer", "MajorityExplainer", "NearestNeighbour", "PromptedExplainer", "WithheldVectorExplainer",
           "base_of", "list_explainers"]
