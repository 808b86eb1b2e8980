"""The patching benchmark's live claims for `selfexplain explain`.

Prompts are read as the ablation benchmark reads them (the same multiple-choice format; the
patching respond line adds "or unknown"). Each --patch BLOCK:TOKEN_TYPE:ENTITY string asks what
patching that layer block at that token with the residual of the same question about ENTITY
would do: asked with the benchmark's query (patch vector injected), checked by patching the
subject.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from selfexplain.benchmarks.ablation.live import ParsedPrompt, known_fact, parse_prompt, subject_answer
from selfexplain.benchmarks.base import LiveClaims
from selfexplain.data.facts import Fact
from selfexplain.errors import ConfigError
from selfexplain.explain import Check, not_available
from selfexplain.records import VECTOR_MARKER
from selfexplain.templates import load_templates

NAME = "patching"
ABOUT = "patching a layer block"


def _benchmark_module():
    # Imported when used: benchmark.py imports this module for its `live` declaration.
    from selfexplain.benchmarks.patching import benchmark

    return benchmark


@dataclass(frozen=True)
class PatchSpec:
    """--patch BLOCK:TOKEN_TYPE:ENTITY, e.g. L25-29:last:Laos (block = layers first-last)."""

    block: tuple[int, int]
    token_type: str
    entity: str

    @classmethod
    def parse(cls, spec: str) -> "PatchSpec":
        token_types = _benchmark_module().TOKEN_TYPES
        parts = spec.split(":", 2)
        names = load_templates("selfexplain.benchmarks.patching")["token_types"]
        kinds = {**{k: k for k in token_types}, **{v.replace(" ", "_"): k for k, v in names.items()},
                 **{v: k for k, v in names.items()}}
        m = re.fullmatch(r"L?(\d+)-(\d+)", parts[0].strip()) if len(parts) == 3 else None
        kind = kinds.get(parts[1].strip()) if len(parts) == 3 else None
        if m is None or kind is None or not parts[2].strip():
            raise ConfigError(f"--patch {spec!r}: expected BLOCK:TOKEN_TYPE:ENTITY, e.g. L25-29:last:Laos "
                              f"(token types: {', '.join(token_types)})")
        return cls((int(m.group(1)), int(m.group(2))), kind, parts[2].strip())

    def __str__(self) -> str:
        return f"L{self.block[0]}-{self.block[1]}:{self.token_type}:{self.entity}"


def patch_specs(patches: Sequence[str | PatchSpec]) -> list[PatchSpec]:
    """The --patch strings as PatchSpecs (already parsed ones pass through)."""
    return [p if isinstance(p, PatchSpec) else PatchSpec.parse(p) for p in patches]


def patching_checks(session, p: ParsedPrompt, patches: Sequence[str | PatchSpec] = ()) -> list:
    """What patching a layer block at a token with another entity's residual would do: asked with
    the benchmark's query (patch vector injected), checked by patching the subject."""
    module = _benchmark_module()
    specs = patch_specs(patches)
    bench = session.benchmark(NAME)
    blocks = module.layer_blocks(session.subject.num_layers, getattr(bench, "n_blocks", 6))
    listing = ", ".join(f"L{a}-{b}" for a, b in blocks)
    if not specs:
        return [not_available(NAME, f"not asked: give --patch BLOCK:TOKEN_TYPE:ENTITY, e.g. --patch "
                                    f"L{blocks[-1][0]}-{blocks[-1][1]}:last:Laos (blocks {listing}; "
                                    f"token types {', '.join(module.TOKEN_TYPES)})", ABOUT)]
    if p.fact is None:
        return [not_available(NAME, "not applicable: patching needs a question about an entity in a "
                                    "known form, e.g. 'What is the capital of Uruguay?'", ABOUT)]
    unknown = bench.t["unknown"]
    firsts = {bench.first_token(session.subject, o) for o in p.options + [unknown]}
    if len(firsts) != len(p.options) + 1:
        return [not_available(NAME, f"not applicable: the options and '{unknown}' must start with "
                                    "distinct tokens", ABOUT)]
    base = Fact(p.fact.relation, p.fact.entity, p.fact.answer, p.question.text, p.question.statement,
                p.fact.source)
    out = []
    for spec in specs:
        if spec.block not in blocks:
            raise ConfigError(f"--patch {spec}: the explainer knows the layer blocks {listing}")
        cf = known_fact(p.fact.relation, spec.entity)
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


LIVE = LiveClaims(about=ABOUT, checks=patching_checks, parse=parse_prompt, answer=subject_answer,
                  check_patches=patch_specs)
