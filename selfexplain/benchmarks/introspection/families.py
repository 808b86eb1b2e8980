"""Object-level prompts, generated from the families in families.json (prompts as data).

Every family yields hundreds of distinct prompts from templates x fillers, the embedded fact set,
or seeded generators (sequences, number picks, option lists); the split is by family.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from typing import Any

from selfexplain.errors import DataError
from selfexplain.templates import load_templates

PACKAGE = "selfexplain.benchmarks.introspection"


@dataclass(frozen=True)
class Prompt:
    """One object-level question put to a model; `options` for the option-list family."""

    id: str
    family: str
    text: str
    properties: tuple[str, ...]  # the family's extra properties (beyond the general ones)
    options: tuple[str, ...] = field(default=())


def family_specs() -> dict[str, dict[str, Any]]:
    return load_templates(PACKAGE, "families.json")["families"]


def _templates(name: str, spec: dict) -> list[Prompt]:
    return [Prompt(f"{name}/{i}", name, t.format(x=x), tuple(spec["properties"]))
            for i, (t, x) in enumerate((t, x) for x in spec["fillers"] for t in spec["templates"])]


def _facts(name: str, spec: dict, rng: random.Random) -> list[Prompt]:
    from selfexplain.data.facts import embedded_facts

    questions = sorted({f.question for f in embedded_facts()})
    rng.shuffle(questions)
    return [Prompt(f"{name}/{i}", name, q, tuple(spec["properties"]))
            for i, q in enumerate(questions[: spec.get("max_prompts", len(questions))])]


def _number_sequence(name: str, spec: dict) -> list[Prompt]:
    lo, hi = spec["starts"]
    s_lo, s_hi = spec["steps"]
    out = []
    for start in range(lo, hi + 1):
        for step in range(s_lo, s_hi + 1):
            seq = ", ".join(str(start + k * step) for k in range(spec["length"]))
            t = spec["templates"][(start + step) % len(spec["templates"])]
            out.append(Prompt(f"{name}/{len(out)}", name, t.format(seq=seq), tuple(spec["properties"])))
    return out


def _letter_sequence(name: str, spec: dict) -> list[Prompt]:
    letters = string.ascii_uppercase
    out = []
    for case in (str.upper, str.lower):
        for step in range(spec["steps"][0], spec["steps"][1] + 1):
            for start in range(len(letters) - step * spec["length"]):
                seq = ", ".join(case(letters[start + k * step]) for k in range(spec["length"]))
                for t in spec["templates"]:
                    out.append(Prompt(f"{name}/{len(out)}", name, t.format(seq=seq), tuple(spec["properties"])))
    return out


def _number_pick(name: str, spec: dict) -> list[Prompt]:
    return [Prompt(f"{name}/{i}", name, t.format(lo=lo, hi=lo + span), tuple(spec["properties"]))
            for i, (t, lo, span) in enumerate((t, lo, span) for lo in spec["lows"] for span in spec["spans"]
                                               for t in spec["templates"])]


def _options(name: str, spec: dict, rng: random.Random, n: int = 400) -> list[Prompt]:
    pools = spec["pools"]
    seen, out = set(), []
    for _ in range(20 * n):
        if len(out) == n:
            break
        pool = pools[rng.choice(sorted(pools))]
        options = tuple(rng.sample(pool, spec["n_options"]))
        t = rng.choice(spec["templates"])
        text = t.format(options=", ".join(options))
        if text not in seen:
            seen.add(text)
            out.append(Prompt(f"{name}/{len(out)}", name, text, tuple(spec["properties"]), options))
    return out


def build_prompts(seed: int) -> dict[str, list[Prompt]]:
    """family -> its prompts (deterministic for a seed; generators draw from their own stream)."""
    out: dict[str, list[Prompt]] = {}
    for name, spec in family_specs().items():
        rng = random.Random(f"{seed}/{name}")
        kind = spec.get("kind")
        if kind == "templates":
            prompts = _templates(name, spec)
        elif kind == "facts":
            prompts = _facts(name, spec, rng)
        elif kind == "number_sequence":
            prompts = _number_sequence(name, spec)
        elif kind == "letter_sequence":
            prompts = _letter_sequence(name, spec)
        elif kind == "number_pick":
            prompts = _number_pick(name, spec)
        elif kind == "options":
            prompts = _options(name, spec, rng)
        else:
            raise DataError(f"families.json: family '{name}' has unknown kind {kind!r}")
        out[name] = prompts
    return out
