"""The ablation benchmark's live claims for `selfexplain explain`, and how it reads a prompt.

A user's prompt is read in the benchmark's multiple-choice format (question, respond line,
optional hint line after it); the subject's answer is read as ground truth reads it (the
logit of each option's first token after the reply prefix). The claim checked live: what
removing the hint would do, asked with the benchmark's own query and checked by re-running the
subject without the hint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from selfexplain.benchmarks.ablation.questions import LETTERS, Question
from selfexplain.benchmarks.base import LiveClaims
from selfexplain.data.facts import Fact, embedded_facts
from selfexplain.errors import DataError
from selfexplain.explain import Answer, Check, not_available
from selfexplain.templates import load_templates

NAME = "ablation"
ABOUT = "removing the hint"


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


def known_fact(relation: str, entity: str) -> Fact:
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
            fact = known_fact(relation, m.group("value"))
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


# ----- the subject's answer --------------------------------------------------------------------
def subject_answer(session, p: ParsedPrompt) -> Answer:
    """The subject's answer to the prompt (with its hint, if any): the option whose first token
    has the highest logit after the reply prefix, read exactly as ground truth reads it."""
    bench = session.benchmark(NAME)  # reads the subject's answer, whatever the adapter knows
    firsts = {bench.first_token(session.subject, o) for o in p.question.labels}
    if len(firsts) != len(p.question.labels):
        raise DataError("the options must start with distinct tokens: the answer is read from the logit "
                        "of each option's first token")
    probs = bench.option_logits(session.subject, p.question, [p.hint])[0].softmax(-1).tolist()
    option_probs = dict(zip(p.question.labels, probs))
    answer = max(option_probs, key=option_probs.get)
    return Answer(p.prompt, p.question.text, list(p.question.labels), p.question.statement, not p.statement_given,
                  p.hint, p.question.correct or None, answer, option_probs)


# ----- claims ----------------------------------------------------------------------------------
def _pct(probs: dict[str, float], option: str) -> str:
    return f"{option} (p={probs[option]:.2f})"


def ablation_checks(session, p: ParsedPrompt, patches: Sequence = ()) -> list:
    """What removing the hint would do: asked with the benchmark's query, checked by re-running
    the subject without the hint."""
    if not p.hint:
        return [not_available(NAME, "not applicable: the prompt has no hint (a line after the respond line)",
                              ABOUT)]
    bench = session.benchmark(NAME)
    record = bench.live_record(session.subject, session.config, p.question, p.hint)
    c = record.context
    effect = (f"without the hint: {_pct(c['option_probs_unhinted'], c['unhinted_answer'])}; with it: "
              f"{_pct(c['option_probs_hinted'], c['hinted_answer'])}")
    if c["wording"] < 0:
        effect += " (hint wording not among the trained ones)"
    details = {k: c[k] for k in ("hint", "hint_target", "hinted_answer", "unhinted_answer", "changed",
                                 "option_probs_hinted", "option_probs_unhinted", "wording")}
    return [Check(record, f'removing the hint "{p.hint}"', effect, details)]


LIVE = LiveClaims(about=ABOUT, checks=ablation_checks, parse=parse_prompt, answer=subject_answer)
