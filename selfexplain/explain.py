"""`selfexplain explain`: a trained self explainer's claims about one prompt, each checked live.

The subject answers a multiple-choice prompt written in the benchmarks' format. The self
explainer (the subject + the run's saved adapter) is asked, in exactly the query format it was
trained on, what each intervention it knows would do; then the intervention is run on the
subject, and the claim is CONFIRMED or REFUTED by the benchmark's own scoring (exact match of
"unchanged from X" / "changes to Y").

Claims are pluggable: `CLAIM_MAKERS` maps a task (benchmark name) to a function building its
live checks from a parsed prompt; every task of `CLAIM_TASKS` is reported, as "not available"
when the adapter was not trained on it or no live check exists for it yet.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence, TextIO

from selfexplain.benchmarks import Benchmark, get_benchmark
from selfexplain.benchmarks.patching.benchmark import TOKEN_TYPES, layer_blocks
from selfexplain.config import RunConfig
from selfexplain.errors import ConfigError, DataError
from selfexplain.data.facts import Fact, embedded_facts
from selfexplain.models.generation import Decoding
from selfexplain.models.loading import LoadedModel
from selfexplain.templates import load_templates
from selfexplain.benchmarks.ablation.questions import LETTERS, Question
from selfexplain.records import VECTOR_MARKER, Record

# The three kinds of claim the command shows, in this order. 'rationales' (which input tokens
# the answer relied on) is benchmarked, but has no live check here yet.
CLAIM_TASKS = ("ablation", "patching", "rationales")
CLAIM_ABOUT = {"ablation": "removing the hint", "patching": "patching a layer block",
               "rationales": "which input tokens the answer relied on"}


# ----- prompts ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParsedPrompt:
    """A user message in the benchmarks' format: question, respond line, optional hint after it."""

    prompt: str
    question: Question        # labels = the options; statement = the reply prefix
    hint: str | None          # the text after the respond line (where the benchmark puts hints)
    fact: Fact | None         # the question as a fact of a known relation (what patching needs)
    statement_given: bool     # False: the reply prefix was inferred (or defaulted)

    @property
    def options(self) -> list[str]:
        """The options without the patching benchmark's 'unknown'."""
        unknown = load_templates("selfexplain.benchmarks.patching")["unknown"]
        return [o for o in self.question.labels if o != unknown]


def _template_regex(template: str, field_name: str) -> re.Pattern:
    head, _, tail = template.partition("{" + field_name + "}")
    return re.compile(re.escape(head) + r"(?P<value>.+?)" + re.escape(tail))


# The ablation respond line; the patching one ("... or unknown and nothing else.") matches it too.
_RESPOND = _template_regex(load_templates("selfexplain.benchmarks.ablation")["respond"], "options")


def _known_fact(relation: str, entity: str) -> Fact:
    """A fact of a relation template about `entity`; its answer from the embedded set if known."""
    spec = load_templates("selfexplain.data", "relations.json")["relations"][relation]
    answer = next((f.answer for f in embedded_facts() if f.relation == relation and f.entity == entity), "")
    return Fact(relation, entity, answer, spec["question"].format(entity=entity),
                spec["statement"].format(entity=entity), "embedded" if answer else "live")


def fact_of(question: str) -> Fact | None:
    """The question as a fact of one of the patching relations ("What is the capital of X?").

    Where several templates match ("On which continent is {entity}?" also matches "On which
    continent is the city of Lyon?"), a fact of the embedded set wins, then the longest template.
    """
    matches = []
    for relation, spec in load_templates("selfexplain.data", "relations.json")["relations"].items():
        m = _template_regex(spec["question"], "entity").fullmatch(question.strip())
        if m:
            fact = _known_fact(relation, m.group("value"))
            matches.append((bool(fact.answer), len(spec["question"]), fact))
    return max(matches, key=lambda t: t[:2])[2] if matches else None


def parse_prompt(prompt: str, statement: str | None = None) -> ParsedPrompt:
    """Split a user message into question, options and hint; infer the reply prefix.

    The reply prefix (the start of the subject's reply, whose next token is an option) is
    `statement`, else the relation template's statement for a known question form, else the
    sentence of a "Complete the sentence: ..." question, else "The answer is".
    """
    text = prompt.replace("\\n", "\n").strip()
    lines = text.split("\n")
    at = next((i for i, line in enumerate(lines) if _RESPOND.fullmatch(line.strip())), None)
    if at is None or at == 0:
        raise DataError("the prompt needs a question, then a line 'Respond with one of A or B or C and "
                        "nothing else.' (optionally followed by a hint line); use \\n between lines")
    options_text = _RESPOND.fullmatch(lines[at].strip()).group("value")
    t = load_templates("selfexplain.benchmarks.ablation")
    options = tuple(o.strip() for o in options_text.split(t["option_separator"]))
    if len(options) < 2 or not all(options) or len(set(options)) != len(options):
        raise DataError(f"need at least two distinct options in the respond line, got {options_text!r}")
    question_text = "\n".join(lines[:at]).strip()
    hint = "\n".join(lines[at + 1:]).strip() or None
    fact = fact_of(question_text)
    given = bool(statement)
    if not statement:
        external = _template_regex(load_templates("selfexplain.data", "relations.json")["external_question"], "statement")
        m = external.fullmatch(question_text)
        if fact is not None:
            statement = fact.statement
        elif m:
            statement = m.group("value")
        else:
            statement = t["letter_statement"]
    correct = fact.answer if fact is not None and fact.answer in options else ""
    q = Question("live", fact.source if fact else "live", question_text, options, correct, statement.strip(),
                 fact.relation if fact else ("mmlu" if set(options) <= set(LETTERS) else ""))
    return ParsedPrompt(text, q, hint, fact, given)


@dataclass(frozen=True)
class PatchSpec:
    """--patch BLOCK:TOKEN_TYPE:ENTITY, e.g. L25-29:last:Laos (block = layers first-last)."""

    block: tuple[int, int]
    token_type: str
    entity: str

    @classmethod
    def parse(cls, spec: str) -> "PatchSpec":
        parts = spec.split(":", 2)
        names = load_templates("selfexplain.benchmarks.patching")["token_types"]
        kinds = {**{k: k for k in TOKEN_TYPES}, **{v.replace(" ", "_"): k for k, v in names.items()},
                 **{v: k for k, v in names.items()}}
        m = re.fullmatch(r"L?(\d+)-(\d+)", parts[0].strip()) if len(parts) == 3 else None
        kind = kinds.get(parts[1].strip()) if len(parts) == 3 else None
        if m is None or kind is None or not parts[2].strip():
            raise ConfigError(f"--patch {spec!r}: expected BLOCK:TOKEN_TYPE:ENTITY, e.g. L25-29:last:Laos "
                              f"(token types: {', '.join(TOKEN_TYPES)})")
        return cls((int(m.group(1)), int(m.group(2))), kind, parts[2].strip())

    def __str__(self) -> str:
        return f"L{self.block[0]}-{self.block[1]}:{self.token_type}:{self.entity}"


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
    return Claim(task, about or CLAIM_ABOUT.get(task, task), "not available", effect=why)


@dataclass
class Check:
    """A live record to ask the explainer about: its query, and the measured truth as answer."""

    record: Record
    about: str
    effect: str
    details: dict = field(default_factory=dict)


ClaimMaker = Callable[["Session", ParsedPrompt, Sequence[PatchSpec]], list]  # -> [Check | Claim]


def _pct(probs: dict[str, float], option: str) -> str:
    return f"{option} (p={probs[option]:.2f})"


def ablation_checks(session: "Session", p: ParsedPrompt, patches: Sequence[PatchSpec]) -> list:
    """What removing the hint would do: asked with the benchmark's query, checked by re-running
    the subject without the hint."""
    if not p.hint:
        return [not_available("ablation", "not applicable: the prompt has no hint (a line after the respond line)")]
    bench = session.benchmark("ablation")
    record = bench.live_record(session.subject, session.config, p.question, p.hint)
    c = record.context
    effect = (f"without the hint: {_pct(c['option_probs_unhinted'], c['unhinted_answer'])}; with it: "
              f"{_pct(c['option_probs_hinted'], c['hinted_answer'])}")
    if c["wording"] < 0:
        effect += " (hint wording not among the trained ones)"
    details = {k: c[k] for k in ("hint", "hint_target", "hinted_answer", "unhinted_answer", "changed",
                                 "option_probs_hinted", "option_probs_unhinted", "wording")}
    return [Check(record, f'removing the hint "{p.hint}"', effect, details)]


def patching_checks(session: "Session", p: ParsedPrompt, patches: Sequence[PatchSpec]) -> list:
    """What patching a layer block at a token with another entity's residual would do: asked with
    the benchmark's query (patch vector injected), checked by patching the subject."""
    bench = session.benchmark("patching")
    blocks = layer_blocks(session.subject.num_layers, getattr(bench, "n_blocks", 6))
    listing = ", ".join(f"L{a}-{b}" for a, b in blocks)
    if not patches:
        return [not_available("patching", f"not asked: give --patch BLOCK:TOKEN_TYPE:ENTITY, e.g. --patch "
                                          f"L{blocks[-1][0]}-{blocks[-1][1]}:last:Laos (blocks {listing}; "
                                          f"token types {', '.join(TOKEN_TYPES)})")]
    if p.fact is None:
        return [not_available("patching", "not applicable: patching needs a question about an entity in a "
                                          "known form, e.g. 'What is the capital of Uruguay?'")]
    unknown = bench.t["unknown"]
    firsts = {bench.first_token(session.subject, o) for o in p.options + [unknown]}
    if len(firsts) != len(p.options) + 1:
        return [not_available("patching", f"not applicable: the options and '{unknown}' must start with "
                                          "distinct tokens")]
    base = Fact(p.fact.relation, p.fact.entity, p.fact.answer, p.question.text, p.question.statement,
                p.fact.source)
    out = []
    for spec in patches:
        if spec.block not in blocks:
            raise ConfigError(f"--patch {spec}: the explainer knows the layer blocks {listing}")
        cf = _known_fact(p.fact.relation, spec.entity)
        record = bench.live_record(session.subject, session.config, base, cf, p.options, spec.block,
                                   spec.token_type)
        c = record.context
        effect = (f"unpatched: {c['clean_answer']}; on the {cf.entity} prompt: {c['cf_clean_answer']}; "
                  f"patched: {c['patched_answer']} (greedy next token)")
        skip = ("the subject answers no option unpatched" if c["clean_answer"] not in p.options else
                f"the subject answers no option on the {cf.entity} prompt" if c["cf_clean_answer"] not in p.options
                else "both prompts get the same answer" if c["clean_answer"] == c["cf_clean_answer"] else "")
        if skip:
            effect += f" ({skip}: the benchmark leaves such pairs out)"
        about = next(line for line in record.query.split("\n") if line.startswith("Patch "))
        about = about.replace(VECTOR_MARKER, "").strip()  # 'Patch L25-29 at "Uruguay" (question) from Laos'
        if p.hint or unknown not in p.question.labels:
            about += f" (on the unhinted prompt with '{unknown}' among the options, as the patching task asks)"
        details = {k: c[k] for k in ("cf_entity", "block", "token_type", "clean_answer", "cf_clean_answer",
                                     "patched_answer", "changed")}
        out.append(Check(record, about, effect, details))
    return out


CLAIM_MAKERS: dict[str, ClaimMaker] = {"ablation": ablation_checks, "patching": patching_checks}


def register_claims(task: str, maker: ClaimMaker) -> None:
    """Add (or replace) the live check of a task, e.g. a future 'rationales' benchmark."""
    CLAIM_MAKERS[task] = maker


# ----- a session: subject + self explainer, loaded once ----------------------------------------
@dataclass
class Explained:
    """The subject's answer to one prompt and the self explainer's checked claims about it."""

    prompt: str
    question: str
    options: list[str]
    statement: str
    statement_inferred: bool
    hint: str | None
    correct: str | None
    answer: str
    option_probs: dict[str, float]
    claims: list[Claim]

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "claims"},
                "claims": [c.to_dict() for c in self.claims]}


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
        from selfexplain.explainers import EXPLAINERS, LoRAExplainer
        from selfexplain.explainers.lora import copy_of
        from selfexplain.models.loading import load_model
        from selfexplain.progress import console
        from selfexplain.training import TrainConfig, load_adapter

        with console.status(f"loading subject {self.config.subject} and the adapter {self.adapter_dir}"), \
                _quiet_transformers():
            self.subject = load_model(self.config.subject, trust_remote_code=self.config.trust_remote_code)
            loaded, projector = load_adapter(copy_of(self.subject), self.adapter_dir)
        explainer = LoRAExplainer("self", lambda: loaded, TrainConfig(), self.adapter_dir, EXPLAINERS["self"],
                                  decoding=Decoding(candidates=self.candidates))
        explainer.loaded, explainer.projector = loaded, projector  # trained: explain() without fit()
        self.explainer = explainer
        return self

    def candidates(self, record: Record) -> list[str] | None:
        """A check's closed answer set, as the run's benchmarks answer (its `answers` mode)."""
        decoding = self.benchmark(record.benchmark).decoding_for(self.config.answers)
        return decoding.candidates(record) if decoding.candidates else None

    def explain(self, prompt: str, statement: str | None = None, patches: Sequence[PatchSpec] = ()) -> Explained:
        if self.subject is None:
            self.load()
        p = parse_prompt(prompt, statement)
        ablation = self.benchmark("ablation")  # reads the subject's answer, whatever the adapter knows
        firsts = {ablation.first_token(self.subject, o) for o in p.question.labels}
        if len(firsts) != len(p.question.labels):
            raise DataError("the options must start with distinct tokens: the answer is read from the logit "
                            "of each option's first token")
        probs = ablation.option_logits(self.subject, p.question, [p.hint])[0].softmax(-1).tolist()
        option_probs = dict(zip(p.question.labels, probs))
        answer = max(option_probs, key=option_probs.get)

        items: list = []
        for task in list(CLAIM_TASKS) + [t for t in self.tasks if t not in CLAIM_TASKS]:
            if task not in self.tasks:
                items.append(not_available(task, f"not available: this adapter was not trained on the {task} task"))
            elif task not in CLAIM_MAKERS:
                items.append(not_available(task, f"not available: no live check for the {task} task yet"))
            else:
                items += CLAIM_MAKERS[task](self, p, patches)
        checks = [c for c in items if isinstance(c, Check)]
        answers = iter(self.explainer.explain([c.record for c in checks]) if checks else [])
        claims = [self._verdict(c, next(answers)) if isinstance(c, Check) else c for c in items]
        return Explained(p.prompt, p.question.text, list(p.question.labels), p.question.statement,
                         not p.statement_given, p.hint, p.question.correct or None, answer, option_probs, claims)

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
    patches = [PatchSpec.parse(s) for s in patch]
    if prompt is not None and not interactive:
        parse_prompt(prompt, statement or None)  # bad prompts fail before the models load
    session = Session(run_dir, adapter or None)
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
