"""Loaders reject bad rows with one line naming file:line (DataError), never a traceback."""

from __future__ import annotations

import json

import pytest

from selfexplain.benchmarks.ablation.questions import mmlu_questions
from selfexplain.data.facts import counterfact_facts
from selfexplain.data.jsonl import read_jsonl
from selfexplain.errors import DataError

GOOD_MMLU = {"id": "q1", "question": "2+2?", "choices": ["1", "2", "3", "4"], "answer": "D"}
GOOD_CF = {"subject": "BBC One", "prompt": "BBC One, by", "relation_template": "{}, by", "target_true": "BBC"}


def _write(path, rows, raw: bytes | None = None):
    path.write_bytes(raw if raw is not None else "".join(json.dumps(r) + "\n" for r in rows).encode())
    return path


@pytest.mark.parametrize("rows,match", [
    ([{**GOOD_MMLU, "question": 7}], "'question' must be a non-empty string"),
    ([{**GOOD_MMLU, "answer": True}], "'answer' must be one of A-D"),
    ([{k: v for k, v in GOOD_MMLU.items() if k != "answer"} | {"answer_index": True}], "'answer' must be one of"),
    ([GOOD_MMLU, GOOD_MMLU], r"mmlu.jsonl:2: duplicate id 'q1' \(first at .*mmlu.jsonl:1\)"),
    ([], "no MMLU questions"),
    ([{**GOOD_MMLU, "choices": ["a", "b"]}], "'choices' must be a list of 4 strings"),
])
def test_mmlu_bad_rows(tmp_path, rows, match):
    with pytest.raises(DataError, match=match):
        mmlu_questions(_write(tmp_path / "mmlu.jsonl", rows))


@pytest.mark.parametrize("rows,match", [
    ([{**GOOD_CF, "subject": 5}], "cf.jsonl:1: subject must be a non-empty string"),
    ([{**GOOD_CF, "target_true": {"str": "BBC"}}], "cf.jsonl:1: target_true must be a non-empty string"),
    ([], "no usable CounterFact rows"),
])
def test_counterfact_bad_rows(tmp_path, rows, match):
    with pytest.raises(DataError, match=match):
        counterfact_facts(_write(tmp_path / "cf.jsonl", rows))


def test_counterfact_not_utf8_is_one_line(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        counterfact_facts(_write(tmp_path / "cf.jsonl", [], raw=b"\xff\xfe\x00bad\n"))


def test_reader_policy_bom_and_skipped_rows(tmp_path):
    path = _write(tmp_path / "x.jsonl", [], raw=b'\xef\xbb\xbf{"a": 1}\nnot json\n[1]\n{"b": 2}\n')
    skipped: list = []
    rows = list(read_jsonl(path, ("a",), skipped=skipped))
    assert rows == [(1, {"a": 1})]  # the BOM does not cost the first row
    assert [(line, why.split(" (")[0]) for _, line, why in skipped] == [
        (2, "not valid JSON"), (3, "not a JSON object"), (4, "missing field(s) a")]
    with pytest.raises(DataError, match=r"x.jsonl:2: not valid JSON"):
        list(read_jsonl(path, ("a",)))  # strict: the first malformed row is the error
    assert counterfact_facts(_write(tmp_path / "ok.jsonl", [GOOD_CF]))[0].entity == "BBC One"
