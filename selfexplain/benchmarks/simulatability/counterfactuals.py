"""Programmatic counterfactual inputs (no model rewrites text): the edit kinds of
counterfactuals.json applied to e-SNLI and CoS-E items.

Each op edits one field of an item (or its choices) by a fixed rule and says why it could not:
`no_site` (nothing to edit), `unchanged` (the result equals the input), `ungrammatical` (the only
place the edit applies would break the sentence). Sites are picked by a seeded rng per item and
kind, so a run is reproducible. `make_counterfactuals` returns the kept counterfactuals of an
item (`per_item`, seeded choice among those made) and every outcome for the counts.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any, Callable

from selfexplain.benchmarks.simulatability.data import Item
from selfexplain.errors import ConfigError
from selfexplain.templates import load_templates

OK, NO_SITE, UNCHANGED, UNGRAMMATICAL = "ok", "no_site", "unchanged", "ungrammatical"
OUTCOMES = (OK, NO_SITE, UNCHANGED, UNGRAMMATICAL)
_TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\S")
_STOP_AFTER_MODIFIER = {"and", "or", "but", "is", "are", "was", "were", "in", "on", "at", "with", "of", "to", "for",
                        "from", "by", "as", "than", "that", "who", "which", "while", "the", "a", "an"}


@dataclass(frozen=True)
class EditKind:
    name: str
    op: str
    field: str
    description: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Counterfactual:
    """An edited item, the kind of edit, and what changed (for the report)."""

    kind: str
    item: Item
    change: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "item": self.item.to_dict(), "change": self.change}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Counterfactual":
        return cls(d["kind"], Item.from_dict(d["item"]), d["change"])


@lru_cache(maxsize=None)
def spec() -> dict:
    return load_templates("selfexplain.benchmarks.simulatability", "counterfactuals.json")


def edit_kinds(dataset: str) -> list[EditKind]:
    kinds = spec()["datasets"].get(dataset)
    if kinds is None:
        raise ConfigError(f"no counterfactual edit kinds for dataset {dataset!r} in counterfactuals.json")
    out = [EditKind(k["name"], k["op"], k.get("field", ""), k.get("description", "")) for k in kinds]
    unknown = [k.op for k in out if k.op not in OPS]
    if unknown:
        raise ConfigError(f"counterfactuals.json: unknown edit op(s) {unknown}; known: {', '.join(OPS)}")
    return out


# ----- text helpers --------------------------------------------------------------------------
def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def detokenize(toks: list[str], like: str) -> str:
    """Tokens back to text: e-SNLI style (spaces before punctuation) when the source had them."""
    text = " ".join(toks)
    if " ." not in like and " ," not in like and " ?" not in like:
        text = re.sub(r" ([.,?!;:])", r"\1", text)
    return text


def _cased(word: str, like: str) -> str:
    return word[:1].upper() + word[1:] if like[:1].isupper() else word


def _fix_articles(toks: list[str]) -> list[str]:
    out = list(toks)
    for i in range(len(out) - 1):
        if out[i].lower() in ("a", "an") and out[i + 1][:1].isalpha():
            want = "an" if out[i + 1][0].lower() in "aeiou" else "a"
            out[i] = _cased(want, out[i])
    return out


def _substitution_map() -> dict[str, str]:
    out: dict[str, str] = {}
    for a, b in spec()["substitutions"]:
        out.setdefault(a, b)
        out.setdefault(b, a)
    return out


# ----- ops: (item, kind, rng) -> (edited item or None, outcome, change) ------------------------
def _set(item: Item, field: str, toks: list[str]) -> Item:
    return replace(item, **{field: detokenize(_fix_articles(toks), getattr(item, field))})


def op_negate(item: Item, kind: EditKind, rng: random.Random):
    s = spec()
    toks = tokens(getattr(item, kind.field))
    low = [t.lower() for t in toks]
    negations = s["negations"]
    for i, t in enumerate(low):  # un-negate first
        if t in negations:
            repl = negations[t]
            new = toks[:i] + ([_cased(repl, toks[i])] if repl else []) + toks[i + 1:]
            return _set(item, kind.field, new), OK, f"removed '{toks[i]}'"
    if kind.field == "question":
        for i, t in enumerate(low[:-1]):
            if t in s["auxiliaries"] + s["question_auxiliaries"]:
                if low[i + 1] in s["question_subjects"]:
                    new = toks[:i + 2] + ["not"] + toks[i + 2:]
                    return _set(item, kind.field, new), OK, f"'not' after '{toks[i]} {toks[i + 1]}'"
                if t in s["auxiliaries"]:
                    new = toks[:i + 1] + ["not"] + toks[i + 1:]
                    return _set(item, kind.field, new), OK, f"'not' after '{toks[i]}'"
        return None, NO_SITE, ""
    for i, t in enumerate(low[:-1]):
        if t in s["auxiliaries"]:
            return _set(item, kind.field, toks[:i + 1] + ["not"] + toks[i + 1:]), OK, f"'not' after '{toks[i]}'"
    perfect = [i for i, t in enumerate(low[:-1]) if t in s["perfect_auxiliaries"]]
    for i in perfect:
        if re.search(r"(ed|en)$", low[i + 1]):
            return _set(item, kind.field, toks[:i + 1] + ["not"] + toks[i + 1:]), OK, f"'not' after '{toks[i]}'"
    # 'has' / 'have' only as a main verb: 'has not a dog' is not English.
    return None, UNGRAMMATICAL if perfect else NO_SITE, ""


def op_substitute(item: Item, kind: EditKind, rng: random.Random):
    subs = _substitution_map()
    toks = tokens(getattr(item, kind.field))
    sites = [i for i, t in enumerate(toks) if t.lower() in subs]
    if not sites:
        return None, NO_SITE, ""
    i = rng.choice(sites)
    new = toks[:i] + [_cased(subs[toks[i].lower()], toks[i])] + toks[i + 1:]
    return _set(item, kind.field, new), OK, f"'{toks[i]}' -> '{new[i]}'"


def op_drop_modifier(item: Item, kind: EditKind, rng: random.Random):
    mods = set(spec()["modifiers"])
    toks = tokens(getattr(item, kind.field))
    found = [i for i, t in enumerate(toks) if t.lower() in mods]
    sites = [i for i in found if i + 1 < len(toks) and toks[i + 1][:1].isalpha()
             and toks[i + 1].lower() not in _STOP_AFTER_MODIFIER]
    if not sites:
        return None, UNGRAMMATICAL if found else NO_SITE, ""
    i = rng.choice(sites)
    return _set(item, kind.field, toks[:i] + toks[i + 1:]), OK, f"dropped '{toks[i]}'"


def op_swap(item: Item, kind: EditKind, rng: random.Random):
    return replace(item, premise=item.hypothesis, hypothesis=item.premise), OK, "premise <-> hypothesis"


def _reorder(item: Item, order: list[int], change: str):
    return replace(item, options=[item.options[j] for j in order],
                   gold=order.index(item.gold) if item.gold in order else -1), OK, change


def op_reverse_choices(item: Item, kind: EditKind, rng: random.Random):
    return _reorder(item, list(range(len(item.options)))[::-1], "choices reversed")


def op_rotate_choices(item: Item, kind: EditKind, rng: random.Random):
    n = len(item.options)
    return _reorder(item, list(range(1, n)) + [0], "first choice moved last")


def op_remove_choice(item: Item, kind: EditKind, rng: random.Random):
    if len(item.options) <= 2:
        return None, NO_SITE, ""
    drop = rng.randrange(len(item.options))
    order = [j for j in range(len(item.options)) if j != drop]
    return _reorder(item, order, f"removed choice '{item.options[drop]}'")


OPS: dict[str, Callable] = {"negate": op_negate, "substitute": op_substitute, "drop_modifier": op_drop_modifier,
                            "swap": op_swap, "reverse_choices": op_reverse_choices,
                            "rotate_choices": op_rotate_choices, "remove_choice": op_remove_choice}


def apply(item: Item, kind: EditKind, seed: int = 0) -> tuple[Counterfactual | None, str]:
    """One edit of one item: the counterfactual (or None) and the outcome."""
    rng = random.Random(f"{seed}/{item.id}/{kind.name}")
    edited, outcome, change = OPS[kind.op](item, kind, rng)
    if edited is None:
        return None, outcome
    if (edited.premise, edited.hypothesis, edited.question, edited.options) == \
            (item.premise, item.hypothesis, item.question, item.options):
        return None, UNCHANGED
    return Counterfactual(kind.name, edited, change), OK


def make_counterfactuals(item: Item, kinds: list[EditKind], per_item: int,
                         seed: int = 0) -> tuple[list[Counterfactual], dict[str, str]]:
    """Up to `per_item` counterfactuals of `item` (a seeded choice among those every kind made),
    and each kind's outcome."""
    made, outcomes = [], {}
    for kind in kinds:
        cf, outcome = apply(item, kind, seed)
        outcomes[kind.name] = outcome
        if cf is not None:
            made.append(cf)
    random.Random(f"{seed}/{item.id}/pick").shuffle(made)
    order = {k.name: i for i, k in enumerate(kinds)}
    kept = sorted(made[:per_item], key=lambda c: order[c.kind])
    return kept, outcomes
