"""Explainer families: where an explanation comes from. Every explainer a benchmark declares
names one, and the report groups, colours and compares explainers by family."""

from __future__ import annotations

# family -> (label, what it is). Order = display order.
FAMILIES: dict[str, tuple[str, str]] = {
    "self": ("self-explanation", "the subject itself, fine-tuned (LoRA) to report on its own computation"),
    "other": ("other model", "a different model trained on the same records to explain the subject"),
    "untrained": ("untrained self-report", "the subject asked about itself without training (prompting)"),
    "human": ("human-generated", "explanations written or marked by human annotators"),
    "post-hoc": ("human-centric post-hoc tool", "attribution maps and other tools built for human readers"),
    "heuristic": ("heuristic", "answers that never look inside the model"),
    "reference": ("reference", "shown for scale (e.g. the training target itself), never a rival"),
}


def check_family(family: str, explainer: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"explainer '{explainer}': unknown family '{family}'; one of {', '.join(FAMILIES)}")
    return family
