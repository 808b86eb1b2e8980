"""What a benchmark is: how records are built, the answer format, and how answers are scored."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence


from selfexplain.config import RunConfig
from selfexplain.errors import ConfigError
from selfexplain.explainers.base import Explainer, Explanation
from selfexplain.models.generation import Decoding
from selfexplain.models.loading import LoadedModel
from selfexplain.records import Record
from selfexplain.templates import template_digest

# What an explainer's answers are about by default: the subject. A summary whose "predicts" names
# another target (e.g. another model's behaviour, in a mirror design) is never paired with self.
SUBJECT_TARGET = "subject"


@dataclass
class BaselineEnv:
    """What benchmark-specific baselines may use: the subject (loaded on demand), the run's
    config, and a directory for caches (e.g. attributions)."""

    subject: Callable[[], LoadedModel]
    config: RunConfig
    cache_dir: Path


@dataclass
class GroundTruth:
    """A benchmark's records plus statistics about them (stored; the report reads `report_facts`)."""

    records: list[Record]
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BaselineSpec:
    """A baseline a benchmark brings: its name, family (explainers.families), what it is, and how to
    build it for a run. `reference`: shown for scale (e.g. the training target), never a rival."""

    name: str
    family: str
    description: str
    make: Callable[[BaselineEnv], Explainer]
    reference: bool = False


@dataclass(frozen=True)
class MetricSpec:
    """A metric a benchmark reports: the key of its estimate in each explainer's summary, a label,
    its direction, and whether it is the primary one (exactly one is). `percent`: shown x100."""

    name: str
    label: str
    higher_is_better: bool = True
    primary: bool = False
    percent: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FACT_KINDS = ("percent", "count", "seconds", "number", "text")


@dataclass(frozen=True)
class ReportFact:
    """One labelled value about a benchmark's ground truth, shown by every report as is.
    `headline` facts also open the benchmark's section; `group` names the table it sits in."""

    label: str
    value: Any
    kind: str = "number"
    note: str = ""
    headline: bool = False
    group: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReportChart:
    """A chart of ground-truth shares: `kind` 'split' (each row a share of `labels[0]` vs
    `labels[1]`) or 'bars' (each row one share)."""

    title: str
    kind: str
    rows: dict[str, float]
    labels: tuple[str, str] = ("", "")
    axis: str = "share of records (%)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReportTable:
    """A table a benchmark adds to its report section (e.g. per dataset), already formatted."""

    title: str
    header: list[str]
    rows: list[list[str]]
    lead: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LiveClaims:
    """How `selfexplain explain` checks this benchmark's claims live on a user's prompt.

    `about` says what the claims are about (shown even when there is no live check yet).
    `checks(session, prompt, patches)` returns explain.Check (ask the explainer, compare with a
    measurement) or explain.Claim (not available, and why) objects; `prompt` is the user's
    prompt as the answering benchmark's `parse` read it, `patches` the command's --patch
    strings, passed through unread (a benchmark that takes them parses them).
    The optional hooks make a benchmark the one that reads the subject's answer (explain uses
    the first benchmark of the run that has `answer`, else any registered one):
    `parse(text, statement) -> prompt` (raises DataError on a prompt it cannot read; runs before
    any model loads), `answer(session, prompt) -> explain.Answer` (the subject's answer and
    option probabilities), and `check_patches(patches)` (raises ConfigError on --patch strings
    it cannot read, before any model loads).
    """

    about: str
    checks: Callable[..., list] | None = None  # None: the claims' topic is declared, no live check yet
    parse: Callable[..., Any] | None = None
    answer: Callable[..., Any] | None = None
    check_patches: Callable[..., None] | None = None


class Benchmark(ABC):
    """A task comparing explainers on ground truth computed on the subject itself.

    The declaration below is all the rest of selfexplain reads: runs, the store, reports,
    `compare`, `explain` and the CLI discover a benchmark from it (docs/adding-a-benchmark.md).
    """

    name: str = "benchmark"
    description: str = ""
    # "closed" (answers from `candidates()`), "ranking" (ranked input positions) or "free" (text).
    answer_format: str = "free"
    # Every metric `summarize` reports, with its direction; exactly one is primary.
    metrics: tuple[MetricSpec, ...] = ()
    # Record counts per mode (RunConfig.for_benchmark); the user's --n-train/--n-test win.
    sizes: dict[str, dict[str, int]] = {"quick": {"n_train": 400, "n_test": 120},
                                        "standard": {"n_train": 1500, "n_test": 400},
                                        "full": {"n_train": 20000, "n_test": 2000}}
    # --sources entries this benchmark reads, and what it reads when none is given.
    sources: tuple[str, ...] = ()
    default_sources: tuple[str, ...] = ()
    # The run's generic explainers that apply (the others come from `baselines`).
    generic_explainers: frozenset[str] = frozenset({"self", "other", "zero-shot", "4-shot", "nearest-neighbour"})
    # Record.context keys that are ground truth: explainers answering a query never see them.
    truth_keys: frozenset[str] = frozenset()
    # How generating explainers write this benchmark's answers (length, repeats).
    decoding: Decoding = Decoding()
    # Passes over this benchmark's training batches per epoch, by mode (default 1).
    train_repeats: dict[str, int] = {}
    # Data files (package, file name) besides the package's own prompts.json whose content the
    # ground truth depends on: their hashes are part of a run's identity.
    data_files: tuple[tuple[str, str], ...] = ()
    # Bump when the ground-truth code changes what it computes: part of a run's identity.
    ground_truth_version: int = 1
    # Prose the report shows: how answers are scored (leaderboard) and what the ground truth is.
    scoring_text: str = ("Every explainer answers the same held-out questions about the subject; an answer counts "
                         "as right when it matches what the subject actually did.")
    ground_truth_text: str = ""
    # Whether `selfexplain run` without --benchmarks runs this benchmark.
    default_suite: bool = False
    # Optional live checks for `selfexplain explain`.
    live: LiveClaims | None = None

    @abstractmethod
    def build_records(self, subject: LoadedModel, config: RunConfig, progress=None) -> GroundTruth:
        """Run the technique on the subject and return train/test records."""

    @abstractmethod
    def score(self, records: Sequence[Record], explanations: Sequence[Explanation]) -> dict[str, list]:
        """Per-item scores, one list per metric, aligned with `records`."""

    @abstractmethod
    def summarize(self, records: Sequence[Record], scores: dict[str, list], seed: int) -> dict[str, Any]:
        """Metric estimates (with CIs) from per-item scores."""

    # ----- the declaration's derived views ---------------------------------------------------
    @property
    def primary_metric(self) -> str:
        primary = [m.name for m in self.metrics if m.primary]
        if len(primary) != 1:
            raise ConfigError(f"benchmark '{self.name}' must declare exactly one primary metric, not {primary}")
        return primary[0]

    def metric(self, name: str) -> MetricSpec:
        return next(m for m in self.metrics if m.name == name)

    def baselines(self) -> list[BaselineSpec]:
        """Benchmark-specific baselines, built lazily by the run (some load models or run captum)."""
        return []

    def reference_explainers(self) -> frozenset[str]:
        return frozenset(b.name for b in self.baselines() if b.reference)

    def identity(self) -> dict[str, Any]:
        """Everything of the benchmark that changes what a run computes: its parameters (plain
        values set in __init__), sizes, training repeats, decoding, prompt/data file hashes and
        ground-truth code version. Part of the run directory's digest; saved in config.json."""
        params = {k: v for k, v in sorted(vars(self).items())
                  if not k.startswith("_") and isinstance(v, (bool, int, float, str, type(None)))}
        files = [(type(self).__module__.rpartition(".")[0], "prompts.json"), *self.data_files]
        digests = {}
        for package, name in files:
            try:
                digests[f"{package}/{name}"] = template_digest(package, name)
            except (FileNotFoundError, ModuleNotFoundError):
                continue
        decoding = {k: v for k, v in asdict(replace(self.decoding, candidates=None)).items() if k != "candidates"}
        return {"params": params, "sizes": self.sizes, "train_repeats": self.train_repeats, "decoding": decoding,
                "files": digests, "ground_truth_version": self.ground_truth_version,
                "class": f"{type(self).__module__}.{type(self).__qualname__}"}

    # ----- answers ----------------------------------------------------------------------------
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
        if answers == "ranked" and self.answer_format == "closed":
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

    def validate(self, config: RunConfig) -> None:  # noqa: B027 - optional hook
        """Fail fast (before any model loads) on config this benchmark cannot run, e.g. missing data."""

    def prepare(self, env: BaselineEnv) -> None:  # noqa: B027 - optional hook
        """Called before scoring: benchmarks whose metrics run the subject keep `env`."""

    # ----- report cards -------------------------------------------------------------------------
    def describe(self, stats: dict[str, Any]) -> str:
        """One line about the ground truth, printed before the explainers run."""
        return "; ".join(f"{f.label} {format_fact(f)}" for f in self.report_facts(stats) if f.headline)

    def report_facts(self, stats: dict[str, Any]) -> list[ReportFact]:
        """The ground-truth facts every report shows (labelled values; the report knows no keys)."""
        return []

    def report_charts(self, stats: dict[str, Any]) -> list[ReportChart]:
        """Ground-truth charts for the HTML report (shares: balance, breakdowns)."""
        return []

    def result_charts(self, section: dict[str, Any]) -> list[ReportChart]:
        """Charts of the explainers' results (e.g. calibration), from the benchmark's results
        section; shown with the ground-truth charts."""
        return []

    def report_tables(self, section: dict[str, Any]) -> list[ReportTable]:
        """Extra tables of this benchmark's report section, from its results section."""
        return []

    def one_sided(self, summary: dict[str, Any]) -> str:
        """'' or a caveat for an explainer that gives (nearly) one answer to every item, named in
        the verdicts: beating it says little about what either learned."""
        return ""

    def report_notes(self, section: dict[str, Any]) -> list[str]:
        """Sentences about the leaderboard (e.g. what a constant answer scores)."""
        return []

    def comparisons(self, records: Sequence[Record], per_item: dict[str, dict[str, dict]],
                    summaries: dict[str, dict], seed: int) -> dict[str, Any]:
        """Comparisons beyond the run's paired primary-metric ones (e.g. per dataset)."""
        return {}


def format_fact(fact: ReportFact) -> str:
    """A fact's value as text: the one formatting every report uses."""
    v = fact.value
    if fact.kind == "text" or isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if v != v:
        return "–"
    if fact.kind == "percent":
        return f"{100 * v:.1f}%"
    if fact.kind == "count":
        return f"{int(v):,}"
    if fact.kind == "seconds":
        return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"
    return f"{v:.4g}"


def sources_for(config: RunConfig, bench: Benchmark) -> list[str]:
    """The run's --sources entries ("name" or "name:path") that `bench` reads.

    Several benchmarks share one --sources option; each takes the entries it knows, or its
    `default_sources` when there are none.
    """
    known = bench.sources
    if not known:
        return []  # a benchmark that builds its own inputs reads no --sources
    picked = [s.strip() for s in config.sources.split(",") if s.strip().partition(":")[0] in known]
    if not picked and bench.default_sources:
        return list(bench.default_sources)
    if not picked:
        raise ConfigError(f"benchmark '{bench.name}' reads sources {', '.join(known)}; got --sources {config.sources!r}")
    return picked


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
