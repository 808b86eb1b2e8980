"""Subject inputs and predictions for the rationales benchmark (ERASER, design.md benchmark 3).

An ERASER item becomes one prompt of the subject: the dataset's template (prompts/
rationales.json, data not code) rendered with the subject's chat template exactly as the
ablation benchmark renders prompts (the template's own system prompt, the user's message, an
assistant turn prefilled with a reply prefix such as "The review is"). The subject's
prediction is the option with the highest log-likelihood after that prefix: each option's whole
token sequence (" negative", " new jersey") is scored (`generation.option_logprobs`),
and the options' probabilities are the softmax of those sums. Perturbed inputs are read the
same way (`option_probabilities`, i.e. `faithfulness.class_probabilities` with the options).

Long documents are cut to a token budget (tokens of the subject's tokenizer) before anything
else, so every explainer sees the same input: one window of whole words holding as much human
evidence as fits, the remaining budget spent on context on both sides of the evidence; cut ends
are marked with the template's elision mark ("..."), which is prompt text, not a document word.
`BuildResult.stats()` reports, per dataset, the budget, how many items were cut and how much
evidence was dropped.

A `RationaleInput` carries what the faithfulness metrics and the attribution module need:
the token ids, the document's token span, the word each document token belongs to (words are
the whitespace words of the budgeted document, as in ERASER), the human rationale as words and
as token positions, and the options' token ids.
"""

from __future__ import annotations

import bisect
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

import torch

from selfexplain.benchmarks.rationales.eraser import EraserItem, document_text, evidence_char_spans, token_char_offsets
from selfexplain.errors import ConfigError, DataError
from selfexplain.benchmarks.rationales.faithfulness import (SUBJECT_LAYOUT, checked_options, class_probabilities,
                                                          only_rationale, without_rationale)
from selfexplain.models.generation import option_logprobs
from selfexplain.templates import chat_parts, load_templates

MIN_BUDGET = 32
DEFAULT_BUDGET = 256
_SPLIT = "\x00"


# ----- templates ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RationaleTemplate:
    """One dataset's prompt. `labels` maps each class to its option text, or is None when the
    options are the item's own choices (cose)."""

    dataset: str
    user: str
    reply: str
    labels: dict[str, str] | None
    respond: str = "Respond with one of {options} and nothing else."
    option_separator: str = " or "
    elision: str = "..."
    query_separator: str | None = None
    query_fields: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, dataset: str, data: Mapping, defaults: Mapping | None = None) -> "RationaleTemplate":
        d = {**(defaults or {}), **data}
        missing = [k for k in ("user", "reply", "labels") if k not in d]
        if missing:
            raise ConfigError(f"rationale template {dataset!r} lacks {', '.join(missing)}")
        labels = d["labels"]
        if labels == "choices":
            labels = None
        elif not isinstance(labels, Mapping) or len(labels) < 2:
            raise ConfigError(f"rationale template {dataset!r}: labels must map at least two classes "
                              f"to option texts, or be \"choices\"")
        template = cls(dataset, d["user"], d["reply"], None if labels is None else dict(labels),
                       d.get("respond", cls.respond), d.get("option_separator", cls.option_separator),
                       d.get("elision", cls.elision), d.get("query_separator"),
                       tuple(d.get("query_fields", ())))
        template.check()
        return template

    def check(self) -> None:
        if self.user.count("{document}") != 1:
            raise ConfigError(f"rationale template {self.dataset!r}: the user message needs {{document}} exactly once")
        if bool(self.query_separator) != bool(self.query_fields):
            raise ConfigError(f"rationale template {self.dataset!r}: query_separator and query_fields go together")
        if self.labels is not None and len(set(self.labels.values())) != len(self.labels):
            raise ConfigError(f"rationale template {self.dataset!r}: two classes share an option text")

    def classes(self, item: EraserItem) -> list[str]:
        """The item's classes in option order: the order of `labels` (the prompt lists the
        options in that order, which matters to small models), else of item.classes."""
        if self.labels is None:
            return list(item.classes)
        return [c for c in self.labels if c in item.classes]

    def options(self, item: EraserItem) -> list[str]:
        """The option texts, in `classes` order."""
        if self.labels is None:
            choices = item.choices
            if choices is None:
                raise _Skip("the template takes its options from the query, which has no '[sep]' choices")
            if len(choices) != len(item.classes):
                raise _Skip(f"{len(choices)} choices for {len(item.classes)} classes")
            if len(set(choices)) != len(choices) or not all(choices):
                raise _Skip(f"options repeat or are empty: {choices}")
            return choices
        missing = [c for c in item.classes if c not in self.labels]
        if missing:
            raise _Skip(f"class(es) {', '.join(missing)} have no option text in the {self.dataset} template")
        return [self.labels[c] for c in self.classes(item)]

    def fields(self, item: EraserItem) -> dict[str, str]:
        """The values the user message is formatted with, besides {document}."""
        values = {"query": item.query.strip()}
        if self.query_separator:
            parts = [p.strip() for p in item.query.split(self.query_separator)]
            if len(parts) != len(self.query_fields):
                raise _Skip(f"query does not split into {len(self.query_fields)} parts at {self.query_separator!r}")
            values.update(zip(self.query_fields, parts))
        return values

    def user_parts(self, item: EraserItem, options: Sequence[str]) -> tuple[str, str]:
        """The user's message before and after the document."""
        respond = self.respond.format(options=self.option_separator.join(options))
        try:
            text = self.user.format(document=_SPLIT, respond=respond, **self.fields(item))
        except KeyError as exc:
            raise ConfigError(f"rationale template {self.dataset!r} uses an unknown field {exc}") from None
        head, tail = text.split(_SPLIT)
        return head, tail


class _Skip(Exception):
    """An item that cannot become an input: skipped and counted, not fatal."""


def load_rationale_templates() -> dict[str, RationaleTemplate]:
    """The built-in templates (prompts/rationales.json), by dataset name."""
    data = load_templates("selfexplain.benchmarks.rationales")
    defaults = {k: data[k] for k in ("respond", "option_separator", "elision") if k in data}
    return {name: RationaleTemplate.from_dict(name, d, defaults) for name, d in data["datasets"].items()}


def template_for(dataset: str, templates: Mapping[str, RationaleTemplate] | None = None) -> RationaleTemplate:
    """The template of `dataset`: from `templates` when given there, else built in."""
    known = {**load_rationale_templates(), **(templates or {})}
    if dataset not in known:
        raise ConfigError(f"no rationale prompt template for dataset {dataset!r}; templates exist for: "
                          f"{', '.join(sorted(known))} (pass templates={{name: RationaleTemplate(...)}} for others)")
    return known[dataset]


# ----- inputs -------------------------------------------------------------------------------
@dataclass
class RationaleInput:
    """One ERASER item as the subject's prompt.

    ids[doc_start:doc_end] are the document's tokens; word_groups[p] is the index in `words`
    of the word token p belongs to (-1 outside the document; a whitespace-only token belongs to
    the word after it). `human_words` are the words inside human evidence, `human_positions`
    their token positions. `options[label_index]` is the gold answer; option_ids[c] are the
    token ids of " " + options[c], scored after the prompt.
    Budget: the document had n_words_original words (n_doc_tokens_original tokens); words[0] is
    its word number word_offset; evidence_words_dropped of its evidence_words_original evidence
    words fell outside the kept window.
    """

    item_id: str
    dataset: str
    ids: list[int]
    doc_start: int
    doc_end: int
    word_groups: list[int]
    words: list[str]
    human_words: set[int]
    human_positions: list[int]
    options: list[str]
    option_ids: list[list[int]]
    label_index: int
    prompt: str
    budget_tokens: int
    n_words_original: int
    n_doc_tokens_original: int
    word_offset: int
    evidence_words_original: int
    evidence_words_dropped: int
    cut_before: bool = False
    cut_after: bool = False
    message: str = ""  # the user's message (template + budgeted document), as explainers are shown it

    @property
    def n_words_kept(self) -> int:
        return len(self.words)

    @property
    def n_doc_tokens(self) -> int:
        return self.doc_end - self.doc_start

    @property
    def cut(self) -> bool:
        return self.cut_before or self.cut_after

    @property
    def label(self) -> str:
        return self.options[self.label_index]

    @property
    def doc_positions(self) -> list[int]:
        return list(range(self.doc_start, self.doc_end))

    def positions_of(self, words: Iterable[int]) -> list[int]:
        """Token positions (sorted) of the given word indices."""
        wanted = set(words)
        bad = [w for w in wanted if not 0 <= w < len(self.words)]
        if bad:
            raise DataError(f"word indices {sorted(bad)[:5]} are outside the {len(self.words)} document words")
        return [p for p in range(self.doc_start, self.doc_end) if self.word_groups[p] in wanted]

    def without_words(self, words: Iterable[int], strategy: str = "delete",
                      baseline_token: int | None = None) -> list[int]:
        """x \\ r: the ids with these words' tokens removed (comprehensiveness)."""
        return without_rationale(self.ids, self.positions_of(words), strategy, baseline_token)

    def only_words(self, words: Iterable[int], strategy: str = "delete",
                   baseline_token: int | None = None) -> list[int]:
        """r: the ids with every other document word removed; the template stays (sufficiency)."""
        return only_rationale(self.ids, self.positions_of(words), self.doc_positions, strategy, baseline_token)

    def attribution_input(self, option: int):
        """An attribution.AttributionInput over the document span, one feature per word, whose
        target is the first token of options[option] (attribution explains one next token)."""
        from selfexplain.techniques.attribution import AttributionInput

        return AttributionInput(list(self.ids), self.option_ids[option][0], self.doc_start, self.doc_end,
                                self.word_groups[self.doc_start:self.doc_end])

    def to_dict(self) -> dict:
        out = asdict(self)
        out["human_words"] = sorted(self.human_words)
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> "RationaleInput":
        return cls(**{**data, "human_words": set(data["human_words"])})


@dataclass
class BuildResult:
    """Inputs in item order, the items that could not be used ((source, reason)), the budget."""

    inputs: list[RationaleInput]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    budget_tokens: int = DEFAULT_BUDGET
    skipped_by_dataset: dict[str, int] = field(default_factory=dict)

    def stats(self) -> dict[str, dict]:
        """Per dataset: the budget, items kept and skipped, items cut, document tokens before
        the cut, and evidence words kept and dropped."""
        out: dict[str, dict] = {}
        for name in sorted({i.dataset for i in self.inputs} | set(self.skipped_by_dataset)):
            rows = [i for i in self.inputs if i.dataset == name]
            evidence = sum(i.evidence_words_original for i in rows)
            dropped = sum(i.evidence_words_dropped for i in rows)
            tokens = [i.n_doc_tokens_original for i in rows]
            out[name] = {
                "budget_tokens": self.budget_tokens,
                "n_items": len(rows), "n_skipped": self.skipped_by_dataset.get(name, 0),
                "n_cut": sum(i.cut for i in rows),
                "doc_tokens_median": statistics.median(tokens) if tokens else math.nan,
                "doc_tokens_max": max(tokens, default=0),
                "words_kept_rate": (sum(i.n_words_kept for i in rows) / sum(i.n_words_original for i in rows)
                                    if rows else math.nan),
                "evidence_words": evidence, "evidence_words_dropped": dropped,
                "evidence_dropped_rate": dropped / evidence if evidence else 0.0,
                "n_items_evidence_dropped": sum(i.evidence_words_dropped > 0 for i in rows),
            }
        return out


def _tokenizer(subject):
    return getattr(subject, "tokenizer", subject)


def build_inputs(subject, items: Sequence[EraserItem], budget_tokens: int = DEFAULT_BUDGET,
                 templates: Mapping[str, RationaleTemplate] | None = None) -> BuildResult:
    """The subject's inputs for ERASER items (a LoadedModel or just its fast tokenizer).

    Documents longer than `budget_tokens` tokens are cut to one window of whole words (see
    `choose_window`); the same items and budget always give the same inputs. Items that cannot
    be rendered (label outside its classes, an unverbalised class, cose choices that repeat) are
    skipped and listed, never fatal; a dataset without a template is a ConfigError.
    """
    if not isinstance(budget_tokens, int) or isinstance(budget_tokens, bool) or budget_tokens < MIN_BUDGET:
        raise ConfigError(f"budget_tokens must be an integer >= {MIN_BUDGET}, got {budget_tokens!r}")
    tok = _tokenizer(subject)
    if not getattr(tok, "is_fast", False):
        raise ConfigError("rationale inputs need a fast tokenizer (character offsets of tokens)")
    known = {**load_rationale_templates(), **(templates or {})}
    missing = sorted({i.dataset for i in items} - set(known))
    if missing:
        raise ConfigError(f"no rationale prompt template for dataset(s) {', '.join(map(repr, missing))}; "
                          f"templates exist for: {', '.join(sorted(known))}")
    before, after = chat_parts(tok)
    context = (tok(before, add_special_tokens=False)["input_ids"] if before
               else tok("", add_special_tokens=True)["input_ids"])  # BOS, if the tokenizer adds one
    result = BuildResult([], [], budget_tokens, {})
    for item in items:
        try:
            result.inputs.append(_build(tok, item, known[item.dataset], budget_tokens, before, context, after))
        except _Skip as exc:
            result.skipped.append((item.source or item.id, str(exc)))
            result.skipped_by_dataset[item.dataset] = result.skipped_by_dataset.get(item.dataset, 0) + 1
    return result


def _evidence_flags(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """Per word (character offsets), whether it overlaps a (sorted, merged) evidence span."""
    flags, k = [], 0
    for a, b in offsets:
        while k < len(spans) and spans[k][1] <= a:
            k += 1
        flags.append(k < len(spans) and spans[k][0] < b)
    return flags


def word_token_counts(tokenizer, text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Tokens of `tokenizer(text)` per word (a whitespace-only token counts for the next word)."""
    counts = [0] * len(offsets)
    if not offsets:
        return counts
    starts = [a for a, _ in offsets]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    for s, e in enc["offset_mapping"]:
        if e <= s:
            continue
        w = _word_of(offsets, starts, s, e)
        counts[w if w is not None else len(offsets) - 1] += 1
    return counts


def _word_of(offsets, starts, s: int, e: int) -> int | None:
    """The first word overlapping chars [s, e), else the next word after e, else None."""
    w = bisect.bisect_right(starts, s) - 1
    if w >= 0 and offsets[w][1] > s:
        return w
    w += 1
    return w if w < len(offsets) else None


def choose_window(counts: Sequence[int], evidence: Sequence[bool], budget: int) -> tuple[int, int]:
    """The window [a, b) of words kept under `budget` tokens (counts[w] tokens per word).

    Among the windows that cannot grow on either side, the one with the most evidence words;
    ties go to the window whose context before its first and after its last evidence word is
    most even (the evidence centred), then to the earliest. Without evidence, the document's
    start. A document within budget is kept whole. Deterministic, O(n).
    """
    n = len(counts)
    if sum(counts) <= budget:
        return 0, n
    tokens = [0]
    ev = [0]
    for c, e in zip(counts, evidence):
        tokens.append(tokens[-1] + c)
        ev.append(ev[-1] + bool(e))
    if ev[-1] == 0:
        b = 0
        while b < n and tokens[b + 1] <= budget:
            b += 1
        return 0, b
    next_ev = [n] * (n + 1)  # first evidence word at or after i
    for i in range(n - 1, -1, -1):
        next_ev[i] = i if evidence[i] else next_ev[i + 1]
    prev_ev = [-1] * (n + 1)  # last evidence word before i
    for i in range(1, n + 1):
        prev_ev[i] = i - 1 if evidence[i - 1] else prev_ev[i - 1]
    best, best_key = (0, 0), None
    b, previous_b = 0, -1
    for a in range(n):
        b = max(b, a)
        while b < n and tokens[b + 1] - tokens[a] <= budget:
            b += 1
        if b > previous_b or a == 0:  # [a, b) cannot grow left: a-1's window ended earlier
            count = ev[b] - ev[a]
            if count:
                first, last = next_ev[a], prev_ev[b]
                balance = abs((tokens[first] - tokens[a]) - (tokens[b] - tokens[last + 1]))
            else:
                balance = 0
            key = (-count, balance, a)
            if best_key is None or key < best_key:
                best, best_key = (a, b), key
        previous_b = b
        if b == n:
            break
    return best


def _build(tok, item: EraserItem, template: RationaleTemplate, budget: int, before: str,
           context: list[int], after: str) -> RationaleInput:
    if item.label not in item.classes:
        raise _Skip(f"label {item.label!r} is not one of the classes {', '.join(item.classes)}")
    options = template.options(item)
    head, tail = template.user_parts(item, options)
    text = document_text(item)
    offsets = token_char_offsets(text)
    if not offsets:
        raise _Skip("the document is empty")
    flags = _evidence_flags(offsets, evidence_char_spans(item))
    counts = word_token_counts(tok, text, offsets)
    a, b = choose_window(counts, flags, budget)
    tail_ids = tok(after + template.reply, add_special_tokens=False)["input_ids"]
    option_ids = [tok(" " + o, add_special_tokens=False)["input_ids"] for o in options]
    if len({tuple(o) for o in option_ids}) != len(option_ids) or not all(option_ids):
        raise _Skip(f"options {options} do not tokenize to distinct token sequences")
    while True:
        if b <= a:
            raise _Skip(f"no whole word of the document fits in {budget} tokens")
        message, user_ids, groups = _render(tok, text, offsets, a, b, head, tail, template.elision)
        n_doc = sum(g >= 0 for g in groups)
        if n_doc <= budget:
            break
        # In-prompt tokens can differ from the per-word counts at the cut ends: give back a word
        # on the side with more context around the evidence, and render again.
        left = next((w for w in range(a, b) if flags[w]), b) - a
        right = b - 1 - next((w for w in range(b - 1, a - 1, -1) if flags[w]), a - 1)
        if left > right:
            a += 1
        else:
            b -= 1
    ids = context + user_ids + tail_ids
    word_groups = [-1] * len(context) + groups + [-1] * len(tail_ids)
    positions = [p for p, g in enumerate(word_groups) if g >= 0]
    doc_start, doc_end = positions[0], positions[-1] + 1
    if doc_end - doc_start != len(positions):
        raise ConfigError(f"the {template.dataset} template splits the document's tokens (template text "
                          f"inside the document span?)")
    words = [text[s:e] for s, e in offsets[a:b]]
    human_words = {w - a for w in range(a, b) if flags[w]}
    prompt = before + message + after + template.reply
    return RationaleInput(
        item_id=item.id, dataset=item.dataset, ids=ids, doc_start=doc_start, doc_end=doc_end,
        word_groups=word_groups, words=words, human_words=human_words,
        human_positions=[p for p in positions if word_groups[p] in human_words],
        options=list(options), option_ids=option_ids, label_index=template.classes(item).index(item.label),
        prompt=prompt, budget_tokens=budget, n_words_original=len(offsets),
        n_doc_tokens_original=sum(counts), word_offset=a, evidence_words_original=sum(flags),
        evidence_words_dropped=sum(flags) - len(human_words), cut_before=a > 0, cut_after=b < len(offsets),
        message=message)


def _render(tok, text: str, offsets, a: int, b: int, head: str, tail: str,
            elision: str) -> tuple[str, list[int], list[int]]:
    """The user's message holding words [a, b) of `text`, its token ids, and each token's word
    index (relative to a; -1 outside the document)."""
    lo, hi = offsets[a][0], offsets[b - 1][1]
    pre = head + (elision + " " if a > 0 else "")
    post = (" " + elision if b < len(offsets) else "") + tail
    message = pre + text[lo:hi] + post
    d0, d1 = len(pre), len(pre) + hi - lo
    words = [(s - lo + d0, e - lo + d0) for s, e in offsets[a:b]]
    starts = [s for s, _ in words]
    enc = tok(message, add_special_tokens=False, return_offsets_mapping=True)
    groups = []
    for s, e in enc["offset_mapping"]:
        if e <= s or e <= d0 or s >= d1:
            groups.append(-1)
            continue
        if message[s:max(s, d0)].strip() or message[min(e, d1):e].strip():
            raise ConfigError(f"a token joins template text and document text ({message[s:e]!r}); put "
                              "whitespace around {document} in the template")
        w = _word_of(words, starts, max(s, d0), min(e, d1))
        groups.append(w if w is not None else len(words) - 1)
    return message, enc["input_ids"], groups


# ----- predictions --------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    """The subject's answer to one input: a softmax over the options' summed log-likelihoods."""

    probs: list[float]
    log_likelihoods: list[float]
    index: int
    correct: bool

    def to_dict(self) -> dict:
        return asdict(self)


def predict(subject, inputs: Sequence[RationaleInput], batch_size: int = 8) -> list[Prediction]:
    """The subject's predictions by option log-likelihood, in input order. Each prompt runs
    once; multi-token options continue from its KV cache (generation.option_logprobs).
    Ties go to the lowest option index."""
    prompts = [i.ids for i in inputs]
    scores = option_logprobs(subject, prompts, checked_options(subject, prompts, [i.option_ids for i in inputs]),
                             batch_size=batch_size, layout=SUBJECT_LAYOUT)
    out = []
    for inp, ll in zip(inputs, scores):
        probs = torch.softmax(ll.double(), dim=-1)
        index = int(torch.argmax(probs))  # the first maximum
        out.append(Prediction([float(p) for p in probs], [float(x) for x in ll], index, index == inp.label_index))
    return out


def option_probabilities(subject, inp: RationaleInput, variants: Sequence[Sequence[int]],
                         batch_size: int = 16) -> torch.Tensor:
    """(len(variants), n_options): the options' probabilities after perturbed versions of one
    input (e.g. inp.without_words(r), inp.only_words(r)); faithfulness.class_probabilities with
    this input's options, read exactly as `predict` reads the unperturbed input."""
    return class_probabilities(subject, variants, inp.option_ids, batch_size)


def accuracy(inputs: Sequence[RationaleInput], predictions: Sequence[Prediction]) -> dict[str, float]:
    """The subject's accuracy per dataset."""
    out: dict[str, list[bool]] = {}
    for inp, pred in zip(inputs, predictions):
        out.setdefault(inp.dataset, []).append(pred.correct)
    return {name: sum(v) / len(v) for name, v in sorted(out.items())}
