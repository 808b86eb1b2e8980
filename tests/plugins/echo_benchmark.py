"""A toy benchmark written as a user would, outside the selfexplain package (docs/adding-a-benchmark.md).

Task: "which word comes first in the subject's greedy continuation of PROMPT?" The ground truth is
computed by running the subject (its greedy next token). Its primary metric is lower-is-better
(the error rate), and it brings its own baseline ("most-common-token", a heuristic).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Sequence

import torch

from selfexplain.benchmarks import register_benchmark
from selfexplain.benchmarks.base import BaselineSpec, Benchmark, GroundTruth, MetricSpec, ReportFact
from selfexplain.explainers import Explainer, Explanation, HeuristicExplainer
from selfexplain.metrics import bootstrap_mean
from selfexplain.records import Provenance, Record

WORDS = ["capital", "France", "river", "language", "Paris", "Rome", "country", "city", "Berlin", "Asia",
         "Europe", "currency", "Madrid", "Tokyo", "Japan", "Spain", "Italy", "Germany"]


class MostCommon(Explainer):
    """Answers every query with the training set's most common answer."""

    name = "most-common-token"

    def fit(self, train: Sequence[Record]) -> None:
        self.answer = Counter(r.answer for r in train).most_common(1)[0][0]

    def explain(self, queries: Sequence[Record]) -> list[Explanation]:
        return [Explanation(self.answer, 0, 0.0) for _ in queries]


class EchoBenchmark(Benchmark):
    name = "toy-echo"
    description = "predict the subject's greedy next token after a two-word prompt (toy plug-in)"
    answer_format = "free"
    metrics = (MetricSpec("error_rate", "error rate (lower is better)", higher_is_better=False, primary=True),
               MetricSpec("accuracy", "accuracy"))
    generic_explainers = frozenset({"nearest-neighbour"})
    truth_keys = frozenset({"next_token"})
    sizes = {"quick": {"n_train": 24, "n_test": 12}, "full": {"n_train": 24, "n_test": 12}}

    def __init__(self, seed_words: int = 2):
        self.seed_words = seed_words

    @torch.no_grad()
    def build_records(self, subject, config, progress=None) -> GroundTruth:
        rng = random.Random(config.seed)
        prompts = sorted({" ".join(rng.sample(WORDS, self.seed_words)) for _ in range(4 * config.n_train)})
        rng.shuffle(prompts)
        prompts = prompts[: config.n_train + config.n_test]
        records = []
        for i, prompt in enumerate(prompts):
            ids = subject.tokenizer(prompt, return_tensors="pt")["input_ids"]
            token = int(subject.model(input_ids=ids).logits[0, -1].argmax())
            word = subject.tokenizer.decode([token]).strip()
            records.append(Record(f"toy-echo/{i}", self.name, "test" if i < config.n_test else "train", prompt,
                                  f"What word comes after '{prompt}'?", word,
                                  Provenance(subject.name, "greedy_next_token", {}, config.seed),
                                  context={"prompt": prompt, "next_token": word}))
        answers = Counter(r.answer for r in records)
        return GroundTruth(records, {"distinct_answers": len(answers),
                                     "top_answer_share": answers.most_common(1)[0][1] / len(records)})

    def score(self, records: Sequence[Record], explanations: Sequence[Explanation]) -> dict[str, list]:
        right = [float(e.text.strip() == r.answer) for r, e in zip(records, explanations)]
        return {"accuracy": right, "error_rate": [1 - x for x in right]}

    def summarize(self, records: Sequence[Record], scores: dict[str, list], seed: int) -> dict[str, Any]:
        return {m: bootstrap_mean(scores[m], seed).to_dict() for m in ("error_rate", "accuracy")}

    def baselines(self) -> list[BaselineSpec]:
        return [BaselineSpec("most-common-token", "heuristic", "the most common next token in training",
                             lambda env: MostCommon()),
                BaselineSpec("echo-last-word", "heuristic", "repeats the prompt's last word",
                             lambda env: HeuristicExplainer("echo-last-word",
                                                            lambda r: r.context["prompt"].split()[-1],
                                                            "repeats the prompt's last word"))]

    def report_facts(self, stats: dict[str, Any]) -> list[ReportFact]:
        return [ReportFact("distinct answers", stats["distinct_answers"], "count", headline=True),
                ReportFact("share of the most common answer", stats["top_answer_share"], "percent", headline=True)]


def register() -> None:
    register_benchmark("toy-echo", EchoBenchmark)
