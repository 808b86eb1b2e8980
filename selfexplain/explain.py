"""`selfexplain explain`: a trained self explainer's claims about one prompt, each checked live.

The subject answers the user's prompt. The self explainer (the subject + the run's saved
adapter) is asked, in exactly the query format it was trained on, what each intervention it
knows would do; then the intervention is run on the subject, and the claim is CONFIRMED or
REFUTED by the benchmark's own scoring (`Benchmark.score`: its exact match).

Nothing here knows a benchmark: each declares its live claims (`Benchmark.live`, a
`LiveClaims`), and every registered benchmark is reported, as "not available" when the adapter
was not trained on it or it declares no live check. The benchmark that reads the prompt and
the subject's answer is the first of the run whose `LiveClaims` has an `answer` hook (else any
registered one); the command's --patch strings are passed to the benchmarks unread.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence, TextIO

from selfexplain.benchmarks import Benchmark, get_benchmark, list_benchmarks
from selfexplain.benchmarks.base import LiveClaims
from selfexplain.config import RunConfig
from selfexplain.errors import ConfigError
from selfexplain.models.generation import Decoding
from selfexplain.models.loading import LoadedModel
from selfexplain.records import Record


# ----- claims ----------------------------------------------------------------------------------
@dataclass
class Claim:
    """One claim of the self explainer about the prompt and its live check.

    status: confirmed / refuted (the benchmark's exact match of claim and measurement),
    unparseable (the explainer's answer is not in the answer format: no claim to check),
    not available (no claim of this kind: `effect` says why).
    """

    task: str
    about: str                 # the intervention, in words
    status: str
    claim: str = ""            # the self explainer's answer, verbatim
    measured: str = ""         # what the subject actually did, in the same answer format
    effect: str = ""           # the measured effect in words, or why there is no claim
    details: dict = field(default_factory=dict)

    @property
    def confirmed(self) -> bool | None:
        return {"confirmed": True, "refuted": False}.get(self.status)

    def to_dict(self) -> dict:
        return {**asdict(self), "confirmed": self.confirmed}


def not_available(task: str, why: str, about: str | None = None) -> Claim:
    """A claim of `task` that cannot be checked: `why` says why; `about` defaults to the task."""
    return Claim(task, about or task, "not available", effect=why)


@dataclass
class Check:
    """A live record to ask the explainer about: its query, and the measured truth as answer."""

    record: Record
    about: str
    effect: str
    details: dict = field(default_factory=dict)


# ----- a session: subject + self explainer, loaded once ----------------------------------------
@dataclass
class Answer:
    """The subject's answer to one prompt, as the benchmark reading it (`LiveClaims.answer`) read it."""

    prompt: str
    question: str
    options: list[str]
    statement: str
    statement_inferred: bool
    hint: str | None
    correct: str | None
    answer: str
    option_probs: dict[str, float]


@dataclass
class Explained(Answer):
    """The subject's answer to one prompt and the self explainer's checked claims about it."""

    claims: list[Claim] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "claims"},
                "claims": [c.to_dict() for c in self.claims]}


def _registered() -> list[str]:
    return list(list_benchmarks())


def check_patches(patches: Sequence[str]) -> None:
    """Fail fast (before any model loads) on --patch strings a registered benchmark cannot read."""
    if not patches:
        return
    for name in _registered():
        live = get_benchmark(name).live
        if live is not None and live.check_patches is not None:
            live.check_patches(list(patches))


def find_adapter(run_dir: Path, benchmarks: Iterable[str]) -> Path | None:
    """run_dir/adapters/self; runs made before multitask adapters kept it per benchmark."""
    for path in [run_dir / "adapters" / "self"] + [run_dir / b / "adapters" / "self" for b in benchmarks]:
        if (path / "adapter_config.json").is_file():
            return path
    return None


class Session:
    """A run's subject and self explainer; `explain(prompt)` answers and checks claims."""

    def __init__(self, run_dir: str | Path, adapter: str | Path | None = None):
        self.run_dir = Path(run_dir).expanduser()
        if not (self.run_dir / "config.json").is_file():
            raise ConfigError(f"{self.run_dir} is not a run directory (no config.json): pass --run with the "
                              "directory `selfexplain run` printed")
        self.config = RunConfig.load(self.run_dir / "config.json")
        self.tasks = self.config.benchmark_list()
        found = Path(adapter).expanduser() if adapter else find_adapter(self.run_dir, self.tasks)
        if found is None or not (found / "adapter_config.json").is_file():
            where = found or self.run_dir / "adapters" / "self"
            raise ConfigError(f"no trained self explainer at {where}: run `selfexplain run` with the 'self' "
                              "explainer first, or pass --adapter DIR")
        from selfexplain.training import check_adapter_dir

        check_adapter_dir(found)  # a garbage adapter_config.json is one line, before any model loads
        self.adapter_dir = found
        self._benchmarks: dict[str, Benchmark] = {}
        self.subject: LoadedModel | None = None
        self.explainer = None  # an Explainer: the self explainer once `load`ed (tests may swap it)

    def benchmark(self, name: str) -> Benchmark:
        if name not in self._benchmarks:
            self._benchmarks[name] = get_benchmark(name)
        return self._benchmarks[name]

    def load(self) -> "Session":
        """Load the subject, and the self explainer = a copy of it + the saved adapter."""
        from selfexplain.explainers import GENERIC_EXPLAINERS, LoRAExplainer
        from selfexplain.explainers.lora import copy_of
        from selfexplain.models.loading import load_model
        from selfexplain.progress import console
        from selfexplain.training import TrainConfig, load_adapter

        with console.status(f"loading subject {self.config.subject} and the adapter {self.adapter_dir}"), \
                _quiet_transformers():
            self.subject = load_model(self.config.subject, trust_remote_code=self.config.trust_remote_code)
            loaded, projector = load_adapter(copy_of(self.subject), self.adapter_dir)
        explainer = LoRAExplainer("self", lambda: loaded, TrainConfig(), self.adapter_dir,
                                  GENERIC_EXPLAINERS["self"][1],
                                  decoding=Decoding(candidates=self.candidates))
        explainer.loaded, explainer.projector = loaded, projector  # trained: explain() without fit()
        self.explainer = explainer
        return self

    def candidates(self, record: Record) -> list[str] | None:
        """A check's closed answer set, as the run's benchmarks answer (its `answers` mode)."""
        decoding = self.benchmark(record.benchmark).decoding_for(self.config.answers)
        return decoding.candidates(record) if decoding.candidates else None

    def names(self) -> list[str]:
        """The benchmarks whose claims are reported, in registry order (the same order whatever
        the run), then any of the run's that is not registered."""
        registered = _registered()
        return registered + [n for n in self.tasks if n not in registered]

    def _live(self, name: str) -> LiveClaims | None:
        try:
            return self.benchmark(name).live
        except ConfigError:  # a run's benchmark that is not registered (any more)
            return None

    def reader(self) -> LiveClaims:
        """The live declaration that reads prompts and the subject's answer: the first of the
        run's benchmarks with an `answer` hook, else the first registered one."""
        for name in self.tasks + self.names():
            live = self._live(name)
            if live is not None and live.answer is not None:
                return live
        raise ConfigError("no registered benchmark reads a subject's answer to a prompt (LiveClaims.answer)")

    def parse(self, prompt: str, statement: str | None = None) -> Any:
        """The prompt as the reading benchmark parses it; no model loads (bad prompts fail here)."""
        live = self.reader()
        return live.parse(prompt, statement) if live.parse is not None else prompt

    def explain(self, prompt: str, statement: str | None = None, patches: Sequence = ()) -> Explained:
        """The subject's answer to `prompt` and each benchmark's live claims about it. `patches`
        (the --patch strings) go to every benchmark's `checks` unread."""
        reader = self.reader()
        parsed = reader.parse(prompt, statement) if reader.parse is not None else prompt
        if self.subject is None:
            self.load()
        answer = reader.answer(self, parsed)

        items: list = []
        for name in self.names():
            live = self._live(name)
            about = live.about if live is not None else None
            if name not in self.tasks:
                items.append(not_available(name, f"not available: this adapter was not trained on the {name} task",
                                           about))
            elif live is None or live.checks is None:
                items.append(not_available(name, f"not available: no live check for the {name} task yet", about))
            else:
                items += live.checks(self, parsed, patches)
        checks = [c for c in items if isinstance(c, Check)]
        answers = iter(self.explainer.explain([c.record for c in checks]) if checks else [])
        claims = [self._verdict(c, next(answers)) if isinstance(c, Check) else c for c in items]
        return Explained(**{f.name: getattr(answer, f.name) for f in fields(Answer)}, claims=claims)

    def _verdict(self, check: Check, explanation) -> Claim:
        """Score the explainer's answer against the measurement, as the benchmark scores it."""
        record = check.record
        scores = self.benchmark(record.benchmark).score([record], [explanation])
        status = ("unparseable" if not scores.get("parsed", [True])[0]
                  else "confirmed" if scores["exact_match"][0] else "refuted")
        return Claim(record.benchmark, check.about, status, explanation.text, record.answer, check.effect,
                     {**check.details, "query": record.query, "has_vector": record.vector is not None})


@contextlib.contextmanager
def _quiet_transformers():
    """No weight-loading progress bars or deprecation warnings between the command's lines."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


# ----- output ----------------------------------------------------------------------------------
STYLE = {"confirmed": "bold green", "refuted": "bold red", "unparseable": "bold yellow", "not available": "dim"}


def render(result: Explained, console) -> None:
    """The subject's answer and the claims, as rich text."""
    from rich.markup import escape

    console.print("[bold]prompt[/]")
    for line in result.prompt.split("\n"):
        console.print(f"  {escape(line)}")
    inferred = " (inferred; set --statement)" if result.statement_inferred else ""
    console.print(f"[bold]reply prefix[/] {escape(result.statement)!r}{inferred}")
    probs = ", ".join(f"{escape(o)} {p:.2f}" for o, p in sorted(result.option_probs.items(), key=lambda kv: -kv[1]))
    correct = f"   (correct per the fact set: {escape(result.correct)})" if result.correct else ""
    console.print(f"[bold]subject's answer[/] [bold cyan]{escape(result.answer)}[/]   "
                  f"p among options: {probs}{correct}")
    console.print("[bold]self explainer's claims[/]")
    for i, c in enumerate(result.claims, 1):
        if c.status == "not available":
            console.print(f"  {i}. [bold]{c.task}[/] - {escape(c.about)}: [dim]{escape(c.effect)}[/]")
            continue
        console.print(f"  {i}. [bold]{c.task}[/] - {escape(c.about)}: says [italic]\"{escape(c.claim)}\"[/]")
        console.print(f"     [{STYLE[c.status]}]{c.status.upper()}[/]  measured \"{escape(c.measured)}\": "
                      f"{escape(c.effect)}")
    console.print()


def run_cli(prompt: str | None, run_dir: str, adapter: str = "", statement: str = "", patch: Sequence[str] = (),
            as_json: bool = False, interactive: bool = False, stdin: TextIO | None = None,
            stdout: TextIO | None = None) -> None:
    """The `selfexplain explain` command: one prompt, or a prompt loop (one per line, until an
    empty line or EOF) when `interactive` or no prompt is given."""
    from rich.console import Console

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    patches = list(patch)
    check_patches(patches)  # bad --patch strings fail before the models load
    session = Session(run_dir, adapter or None)  # reads the run's config; loads no model
    if prompt is not None and not interactive:
        session.parse(prompt, statement or None)  # bad prompts fail before the models load
    out = Console(file=stdout, highlight=False, soft_wrap=True)

    def one(text: str) -> None:
        result = session.explain(text, statement or None, patches)
        if as_json:
            stdout.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
            stdout.flush()
        else:
            render(result, out)

    if prompt is not None and not interactive:
        one(prompt)
        return
    from selfexplain.errors import SelfExplainError
    from selfexplain.progress import console as err

    session.load()
    if prompt is not None:
        one(prompt)
    err.print("one prompt per line (\\n for a newline); an empty line or EOF ends")
    while True:
        if stdin.isatty():
            err.print("prompt> ", end="")
        line = stdin.readline()
        if not line.strip():
            break
        try:
            one(line.rstrip("\n"))
        except SelfExplainError as exc:  # a bad prompt does not end the loop
            err.print(f"error: {exc}", markup=False, soft_wrap=True)
