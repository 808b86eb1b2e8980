"""What a benchmark is: how records are built, the answer format, and how answers are scored."""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from selfexplain.config import RunConfig
from selfexplain.errors import ConfigError
from selfexplain.explainers.base import Explainer, Explanation
from selfexplain.models.generation import Decoding
from selfexplain.metrics import bootstrap_macro_f1, bootstrap_mean
from selfexplain.models.loading import LoadedModel
from selfexplain.records import Record

_CHANGE_ANSWER = re.compile(r"^\s*(unchanged from|changes to)\s+(.+?)\s*\.?\s*$", re.IGNORECASE)


@dataclass
class BaselineEnv:
    """What benchmark-specific baselines may use: the subject (loaded on demand), the run's
    config, and a directory for caches (e.g. attributions)."""

    subject: Callable[[], LoadedModel]
    config: RunConfig
    cache_dir: Path


@dataclass
class GroundTruth:
    """A benchmark's records plus facts about them every report shows."""

    records: list[Record]
    stats: dict[str, Any] = field(default_factory=dict)


class Benchmark(ABC):
    """A task comparing explainers on ground truth computed on the subject itself."""

    name: str = "benchmark"
    description: str = ""
    primary_metric: str = "exact_match"
    # Record counts per mode (RunConfig.for_benchmark); the user's --n-train/--n-test win.
    sizes: dict[str, dict[str, int]] = {"quick": {"n_train": 1500, "n_test": 400},
                                        "full": {"n_train": 20000, "n_test": 2000}}
    # --sources entries this benchmark reads, and what it reads when none is given.
    sources: tuple[str, ...] = ()
    default_sources: tuple[str, ...] = ()
    # The run's generic explainers that apply (the others come from `baselines`).
    generic_explainers: frozenset[str] = frozenset({"self", "other", "zero-shot", "4-shot", "nearest-neighbour"})
    # Explainers shown for reference (e.g. the training target itself), never "the best other".
    reference_explainers: frozenset[str] = frozenset()
    # How generating explainers write this benchmark's answers (length, repeats).
    decoding: Decoding = Decoding()
    # Passes over this benchmark's training batches per epoch, by mode (default 1).
    train_repeats: dict[str, int] = {}

    @abstractmethod
    def build_records(self, subject: LoadedModel, config: RunConfig, progress=None) -> GroundTruth:
        """Run the technique on the subject and return train/test records."""

    @abstractmethod
    def score(self, records: Sequence[Record], explanations: Sequence[Explanation]) -> dict[str, list]:
        """Per-item scores, one list per metric, aligned with `records`."""

    @abstractmethod
    def summarize(self, records: Sequence[Record], scores: dict[str, list], seed: int) -> dict[str, Any]:
        """Metric estimates (with CIs) from per-item scores."""

    def instruction(self) -> str:
        """Instruction that precedes prompted (zero/few-shot) queries."""
        return ""

    def candidates(self, record: Record) -> list[str] | None:
        """The closed set of answers `record` admits, or None where answers are open (free text)."""
        return None

    def decoding_for(self, answers: str) -> Decoding:
        """How generating explainers answer this benchmark under the run's `--answers` mode:
        'ranked' picks the likeliest candidate where the benchmark has a closed answer set,
        'generated' decodes freely (greedy) and parses."""
        if answers == "ranked":
            return replace(self.decoding, candidates=self.candidates)
        return self.decoding

    def example_key(self, record: Record) -> str:
        """Answer kind used to balance few-shot examples."""
        return ""

    def first_token(self, subject: LoadedModel, option: str) -> int:
        """First token id of " option": the subject's answer is read from that one logit.
        Cached per tokenizer (called for every option of every record)."""
        cache = self.__dict__.setdefault("_first_tokens", {})
        key = (id(subject.tokenizer), option)
        if key not in cache:
            cache[key] = subject.tokenizer(" " + option, add_special_tokens=False)["input_ids"][0]
        return cache[key]

    def baselines(self, env: BaselineEnv) -> dict[str, Callable[[], Explainer]]:
        """Benchmark-specific baselines by name, built lazily (some load models or run captum)."""
        return {}

    def validate(self, config: RunConfig) -> None:  # noqa: B027 - optional hook
        """Fail fast (before any model loads) on config this benchmark cannot run, e.g. missing data."""

    def prepare(self, env: BaselineEnv) -> None:  # noqa: B027 - optional hook
        """Called before scoring: benchmarks whose metrics run the subject keep `env`."""

    def describe(self, stats: dict[str, Any]) -> str:
        """One line about the ground truth, printed before the explainers run."""
        return (f"subject accuracy {stats.get('subject_accuracy_unpatched', float('nan')):.1%}; "
                f"raw changed rate {stats.get('raw_changed_rate', float('nan')):.1%}")

    def comparisons(self, records: Sequence[Record], per_item: dict[str, dict[str, dict]],
                    summaries: dict[str, dict], seed: int) -> dict[str, Any]:
        """Comparisons beyond the run's paired primary-metric ones (e.g. per dataset)."""
        return {}


def sources_for(config: RunConfig, bench: Benchmark) -> list[str]:
    """The run's --sources entries ("name" or "name:path") that `bench` reads.

    Several benchmarks share one --sources option; each takes the entries it knows, or its
    `default_sources` when there are none.
    """
    known = bench.sources
    picked = [s.strip() for s in config.sources.split(",") if s.strip().partition(":")[0] in known]
    if not picked and bench.default_sources:
        return list(bench.default_sources)
    if not picked:
        raise ConfigError(f"benchmark '{bench.name}' reads sources {', '.join(known)}; got --sources {config.sources!r}")
    return picked


def normalize(text: str) -> str:
    return re.sub(r"[^\w]+", " ", text.lower()).strip()


def parse_change_answer(text: str) -> tuple[bool | None, str]:
    """(changed?, answer content) of "unchanged from X" / "changes to Y"; (None, '') when unparseable."""
    m = _CHANGE_ANSWER.match(text.strip().split("\n")[0])
    if not m:
        return None, ""
    return m.group(1).lower() == "changes to", normalize(m.group(2))


class ChangeBenchmark(Benchmark):
    """Benchmarks whose answers are "unchanged from X" / "changes to Y" after an intervention.

    Records carry context['changed'] and context[after_key] (the subject's answer after the
    intervention); scoring is exact match, has-changed macro-F1 and content match.
    """

    after_key: str = "answer_after"
    before_key: str = "answer_before"  # the subject's answer without the intervention
    # Subclasses hold templates `t` with "answer_unchanged" and "answer_changed" ({answer}).
    t: dict[str, Any]

    def options(self, record: Record) -> list[str]:
        """Every answer the subject could change to (the record's options)."""
        raise NotImplementedError

    def candidates(self, record: Record) -> list[str]:
        """"unchanged from <answer before>", and "changes to <o>" for every other option."""
        before = record.context[self.before_key]
        return [self.t["answer_unchanged"].format(answer=before)] + [
            self.t["answer_changed"].format(answer=o) for o in self.options(record) if o != before]

    def score(self, records: Sequence[Record], explanations: Sequence[Explanation]) -> dict[str, list]:
        out: dict[str, list] = {"exact_match": [], "changed_pred": [], "changed_true": [], "content_match": [],
                                "parsed": []}
        for r, e in zip(records, explanations):
            pred_changed, pred_content = parse_change_answer(e.text)
            true_changed, true_content = parse_change_answer(r.answer)
            out["exact_match"].append(float(pred_changed == true_changed and pred_content == true_content))
            out["changed_pred"].append(pred_changed)
            out["changed_true"].append(true_changed)
            out["content_match"].append(float(pred_content == normalize(r.context[self.after_key])))
            out["parsed"].append(float(pred_changed is not None))
        return out

    def summarize(self, records: Sequence[Record], scores: dict[str, list], seed: int) -> dict[str, Any]:
        right = [i for i, r in enumerate(records) if r.context.get("subject_correct")]
        return {
            "exact_match": bootstrap_mean(scores["exact_match"], seed).to_dict(),
            "changed_macro_f1": bootstrap_macro_f1(scores["changed_true"], scores["changed_pred"], seed).to_dict(),
            "content_match": bootstrap_mean(scores["content_match"], seed).to_dict(),
            "parse_rate": float(sum(scores["parsed"]) / max(1, len(scores["parsed"]))),
            # share of parsed answers that say "changes": near 0 or 1, an explainer answers one way
            "said_changed_rate": float(np.mean(said)) if (said := [p for p in scores["changed_pred"] if p is not None])
            else float("nan"),
            "exact_match_subject_correct": bootstrap_mean([scores["exact_match"][i] for i in right], seed).to_dict(),
        }

    def example_key(self, record: Record) -> str:
        return "changed" if record.context["changed"] else "unchanged"


def balanced_sample(records: list[Record], key: Callable[[Record], Any], n: int,
                    rng: random.Random, strict: bool) -> list[Record]:
    """Up to n records with classes as equal as possible.

    strict: every class gets exactly the same count (test sets); otherwise the shortfall of a
    rare class is filled from the others (training sets, where data matters more than balance).
    """
    groups: dict[Any, list[Record]] = {}
    for r in records:
        groups.setdefault(key(r), []).append(r)
    for g in groups.values():
        rng.shuffle(g)
    per_class = n // max(1, len(groups))
    if strict:
        per_class = min([per_class] + [len(g) for g in groups.values()])
        picked = [r for g in groups.values() for r in g[:per_class]]
    else:
        picked = [r for g in groups.values() for r in g[:per_class]]
        rest = [r for g in groups.values() for r in g[per_class:]]
        rng.shuffle(rest)
        picked += rest[: max(0, n - len(picked))]
    rng.shuffle(picked)
    return picked
