"""Property-based bad input for every data loader: generated rows of the wrong types, missing
fields, garbage lines, BOMs, bad encodings, duplicates and empty files. Each loader either
returns what it read or raises a one-line DataError; no other exception, ever."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfexplain.benchmarks.ablation.questions import mmlu_questions
from selfexplain.benchmarks.rationales.eraser import load_eraser
from selfexplain.data.facts import counterfact_facts, lre_facts
from selfexplain.errors import DataError

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["A", "D", "{} is in", "Paris", "{}", ""]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                       st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                      max_leaves=8)


def rows_of(good: dict) -> st.SearchStrategy[list[bytes]]:
    """Lines: the good row, the good row with fields replaced, dropped or retyped, and garbage."""
    row = st.fixed_dictionaries({}, optional={k: st.one_of(st.just(v), values) for k, v in good.items()})
    line = st.one_of(row.map(lambda r: json.dumps(r).encode()), st.just(json.dumps(good).encode()),
                     st.binary(max_size=30), st.just(b"[1, 2]"), st.just(b"x" * 5000), st.just(b""))
    return st.lists(line, max_size=6)


def _file(lines: list[bytes], bom: bool) -> bytes:
    return (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + (b"\n" if lines else b"")


def _check(load, build) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = build(Path(tmp))
        try:
            load(path)
        except DataError as exc:
            assert "\n" not in str(exc) and str(exc)


@SETTINGS
@given(rows_of({"id": "q1", "question": "2+2?", "choices": ["1", "2", "3", "4"], "answer": "D"}), st.booleans())
def test_mmlu_loader(lines, bom):
    def build(d):
        (d / "mmlu.jsonl").write_bytes(_file(lines, bom))
        return d / "mmlu.jsonl"
    _check(mmlu_questions, build)


@SETTINGS
@given(rows_of({"subject": "BBC One", "prompt": "BBC One, by", "relation_template": "{}, by", "target_true": "BBC"}),
       st.booleans())
def test_counterfact_loader(lines, bom):
    def build(d):
        (d / "cf.jsonl").write_bytes(_file(lines, bom))
        return d / "cf.jsonl"
    _check(counterfact_facts, build)


@SETTINGS
@given(rows_of({"relation": "city in country", "prompt_templates_zs": ["{} is in the country of"]}),
       rows_of({"relation": "city in country", "subject": "Lyon", "object": "France"}), st.booleans())
def test_lre_loader(relations, samples, bom):
    def build(d):
        (d / "relations.jsonl").write_bytes(_file(relations, bom))
        (d / "samples.jsonl").write_bytes(_file(samples, bom))
        return d
    _check(lre_facts, build)


@SETTINGS
@given(rows_of({"annotation_id": "a1", "classification": "POS", "query": "Is it good?", "docids": ["d1"],
                "evidences": [[{"docid": "d1", "start_token": 0, "end_token": 2, "start_sentence": 0,
                                "end_sentence": 1, "text": "a fine"}]]}),
       rows_of({"docid": "d1", "document": "a fine film indeed"}), st.booleans())
def test_eraser_loader(annotations, docs, bom):
    def build(d):
        (d / "val.jsonl").write_bytes(_file(annotations, bom))
        (d / "docs.jsonl").write_bytes(_file(docs, bom))
        return d
    _check(lambda p: load_eraser(p, "movies"), build)
