"""The simulator: one fixed model (not the subject; default the run's other model, Gemma-3-270M,
+ LoRA) that, given an input, an explanation of the subject's answer and a counterfactual input,
predicts the subject's answer on the counterfactual. Its prompts are data (prompts.json) and the
same for every explanation source.

It is trained like any explainer (training.train_explainer: prompt -> the subject's answer text)
on held-apart items, with every source's explanations in equal shares plus the no-explanation
condition and the explanation-only condition that LAS's leakage test uses (`training_examples`).
Two are trained per run, on disjoint item pools and seeds: the selection simulator picks self's
training explanations, the scoring simulator scores every explainer on the test set.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from selfexplain.benchmarks.simulatability.counterfactuals import Counterfactual
from selfexplain.benchmarks.simulatability.data import Item
from selfexplain.benchmarks.simulatability.subject import option_ids, prompts
from selfexplain.models.generation import option_logprobs
from selfexplain.models.loading import LoadedModel
from selfexplain.records import Provenance, Record
from selfexplain.training import TrainConfig, load_trained, train_explainer

SIM_BENCHMARK = "simulatability-simulator"
NONE = "none"  # the no-explanation condition


@dataclass
class SimQuery:
    """One simulator question: its prompt, the options it chooses among, and (for training and
    scoring) the index of the subject's actual answer."""

    text: str
    options: list[str]
    answer: int = -1


def render_input(item: Item) -> str:
    s = prompts()["simulator"]
    return s["input"][item.dataset].format(premise=item.premise, hypothesis=item.hypothesis, question=item.question,
                                          options=s["options_separator"].join(item.options))


def counterfactual_query(item: Item, explanation: str, cf: Counterfactual, answer: int = -1) -> SimQuery:
    """Predict the subject's answer on `cf` from the input and the explanation ('' = none)."""
    s = prompts()["simulator"]
    explanation = explanation.strip()
    key = "with_explanation" if explanation else "without_explanation"
    text = s[key].format(input=render_input(item), explanation=explanation, counterfactual=render_input(cf.item))
    return SimQuery(text, list(cf.item.options), answer)


def explanation_only_query(item: Item, explanation: str, answer: int = -1) -> SimQuery:
    """LAS's leakage test: the explanation alone (input hidden), predicting the original answer."""
    s = prompts()["simulator"]
    line = s["options_line"].format(options=s["options_separator"].join(item.options))
    return SimQuery(s["explanation_only"].format(explanation=explanation.strip(), options_line=line),
                    list(item.options), answer)


def training_examples(pool: Sequence[tuple[Item, list[Counterfactual], int, list[int], dict[str, str]]],
                      sources: Sequence[str]) -> list[SimQuery]:
    """The simulator's training set: for each item (item, counterfactuals, subject's answer on it,
    subject's answers on the counterfactuals, explanation per source), every counterfactual twice,
    without explanation and with one source's explanation (sources in rotation, so each gets an
    equal share), plus one explanation-only example (sources in rotation)."""
    out: list[SimQuery] = []
    turn = 0
    for item, cfs, answer, cf_answers, expl in pool:
        for cf, a in zip(cfs, cf_answers):
            out.append(counterfactual_query(item, "", cf, a))
            out.append(counterfactual_query(item, expl.get(sources[turn % len(sources)], ""), cf, a))
            turn += 1
        text = expl.get(sources[turn % len(sources)], "")
        if text.strip():
            out.append(explanation_only_query(item, text, answer))
        turn += 1
    return out


def as_records(queries: Sequence[SimQuery], role: str, seed: int) -> list[Record]:
    return [Record(id=f"{role}/{i}", benchmark=SIM_BENCHMARK, split="train", group=f"{role}/{i}", query=q.text,
                   answer=q.options[q.answer], provenance=Provenance("simulator", role, {}, seed))
            for i, q in enumerate(queries)]


def adapter_dir(cache_dir: Path, role: str, base_name: str, records: Sequence[Record], config: TrainConfig) -> Path:
    digest = hashlib.sha1(json.dumps([base_name, [(r.query, r.answer) for r in records], repr(config)]).encode())
    return cache_dir / "simulatability" / f"{role}-{digest.hexdigest()[:16]}"


def train_simulator(base: LoadedModel, queries: Sequence[SimQuery], role: str, config: TrainConfig,
                    cache_dir: Path, progress=None) -> tuple[LoadedModel, Path]:
    """A LoRA simulator on `queries` (`base` is wrapped in place: pass a copy), or the one saved
    before for exactly these examples and config; and its adapter directory."""
    records = as_records(queries, role, config.seed)
    out = adapter_dir(cache_dir, role, base.name, records, config)
    saved = load_trained(base, records, config, out, None)
    if saved is not None:
        return saved[0], out
    trained, _ = train_explainer(base, records, config, out, progress=progress)
    return trained, out


@torch.no_grad()
def predict(sim: LoadedModel, queries: Sequence[SimQuery], batch_size: int = 16) -> list[list[float]]:
    """Each query's probabilities over its options: softmax of the options' whole-answer
    log-likelihoods (' option'; single-token options are read from the prompt's forward alone,
    so a 262k vocabulary is projected only where an option has more tokens)."""
    if not queries:
        return []
    from selfexplain.models.generation import ScoreLayout, encode_query

    layout = ScoreLayout(longest_first=True, min_shared_prefix=8, continuation="tails")
    scores = option_logprobs(sim, [encode_query(sim, q.text) for q in queries],
                             [option_ids(sim, q.options) for q in queries], batch_size=batch_size, layout=layout)
    return [s.double().softmax(-1).tolist() for s in scores]


def argmax(probs: Sequence[float]) -> int:
    return max(range(len(probs)), key=lambda i: probs[i])
