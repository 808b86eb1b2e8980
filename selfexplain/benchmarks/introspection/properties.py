"""Properties of a model's object-level answer, each with a closed answer set.

Closed sets keep every explainer on the same footing: the answer is one of the listed values,
so accuracy compares like with like and candidate probabilities give calibration. Open-valued
properties (first word, characters) list the family's most frequent values plus "other".
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

from selfexplain.benchmarks.introspection.families import PACKAGE, Prompt
from selfexplain.templates import load_templates

_NUMBER = re.compile(r"-?\d+")
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
VOWELS = set("aeiou")


def spec() -> dict:
    return load_templates(PACKAGE)


def clean_answer(text: str) -> str:
    """The answer as a reader takes it: the first non-empty line, without surrounding quotes,
    markdown emphasis or a trailing full stop."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    return line.strip().strip("*\"'`").rstrip(".").strip()


def applicable(prompt: Prompt) -> list[str]:
    """The properties asked about `prompt`: the general ones and its family's own."""
    props = spec()["properties"]
    return [p for p, s in props.items() if s["scope"] == "general" or p in prompt.properties]


def value(prop: str, answer: str, prompt: Prompt) -> str:
    """The raw value of `prop` on a cleaned answer (before open values are bucketed)."""
    words = _WORD.findall(answer)
    low = answer.lower()
    if prop == "first_word":
        return words[0].lower() if words else "(empty)"
    if prop == "second_word":
        return words[1].lower() if len(words) > 1 else "(none)"
    if prop == "first_char":
        return low[0] if low else "(empty)"
    if prop == "second_char":
        return ("(space)" if low[1] == " " else low[1]) if len(low) > 1 else "(none)"
    if prop == "starts_with_vowel":
        return "yes" if low[:1] in VOWELS else "no"
    if prop == "length":
        return "1-2" if len(words) <= 2 else "3-5" if len(words) <= 5 else "6 or more"
    if prop == "parity":
        m = _NUMBER.search(answer)
        return ("even" if int(m.group()) % 2 == 0 else "odd") if m else "no number"
    if prop in ("among_options", "option_half"):
        first = words[0].lower() if words else ""
        options = [o.lower() for o in prompt.options]
        hit = next((i for i, o in enumerate(options) if first == o or low.startswith(o)), None)
        if prop == "among_options":
            return "yes" if hit is not None else "no"
        return "neither" if hit is None else ("first two" if hit < len(options) / 2 else "last two")
    raise KeyError(f"unknown property {prop!r}")


def open_candidates(values: Sequence[str], top_k: int) -> list[str]:
    """The `top_k` most frequent values (ties: alphabetical) plus "other", sorted so the order
    tells nothing about frequency."""
    other = spec()["other"]
    counts = Counter(v for v in values if v != other)
    top = [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]]
    return sorted(top) + [other]


def candidate_sets(answers: dict[str, tuple[Prompt, str]]) -> dict[tuple[str, str], list[str]]:
    """(family, property) -> the closed answer set, from one model's answers to every prompt of
    each family: fixed values where the property has them, else the family's top values + other."""
    props = spec()["properties"]
    by_family: dict[tuple[str, str], list[str]] = {}
    for prompt, answer in answers.values():
        for prop in applicable(prompt):
            by_family.setdefault((prompt.family, prop), []).append(value(prop, answer, prompt))
    out = {}
    for key, values in by_family.items():
        s = props[key[1]]
        out[key] = list(s["values"]) if "values" in s else open_candidates(values, s["top_k"])
    return out


def bucket(raw: str, candidates: Sequence[str]) -> str:
    """A raw value as one of the candidates ("other" when it is not listed)."""
    return raw if raw in candidates else spec()["other"]
