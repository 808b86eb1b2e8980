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


# ----- run-level input checks (no model loads) -----------------------------------------------
def test_nothing_to_run_and_wrong_model_fail_before_a_run_directory(tmp_path, tiny_dirs):
    from selfexplain import RunConfig
    from selfexplain.errors import ConfigError, ModelLoadError
    from selfexplain.runs.run import Run

    with pytest.raises(ConfigError, match="none of --explainers human applies to benchmark 'patching'"):
        Run(RunConfig(explainers="human", subject=str(tiny_dirs["subject"]), output_dir=str(tmp_path / "a")))
    with pytest.raises(ModelLoadError, match="not found"):
        Run(RunConfig(subject=str(tmp_path / "no-such-model"), output_dir=str(tmp_path / "b")))
    with pytest.raises(ModelLoadError, match="not found"):  # the other model is checked where 'other' runs
        Run(RunConfig(subject=str(tiny_dirs["subject"]), other="/no/such.gguf", output_dir=str(tmp_path / "c")))
    Run(RunConfig(subject=str(tiny_dirs["subject"]), other="/no/such.gguf", explainers="self",
                  output_dir=str(tmp_path / "d")))  # ... and only there
    assert not any((tmp_path / d).exists() and any((tmp_path / d).iterdir()) for d in "abc")


def test_long_subject_name_keeps_run_directory_names_short():
    from selfexplain import RunConfig
    from selfexplain.runs.run import run_dir_for

    long_a, long_b = RunConfig(subject="/m/" + "x" * 300), RunConfig(subject="/m/" + "x" * 299 + "y")
    assert len(run_dir_for(long_a).name) < 128 and run_dir_for(long_a) != run_dir_for(long_b)


def test_second_writer_of_a_running_run_is_refused(tmp_path):
    import subprocess
    import sys

    from selfexplain.errors import ConfigError
    from selfexplain.runs.store import Store

    store = Store(tmp_path / "selfexplain.db")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        store.start_run("r1", tmp_path / "r1", {}, {})
        store.db.execute("UPDATE runs SET pid=? WHERE id='r1'", (other.pid,))  # as if that process ran it
        with pytest.raises(ConfigError, match=f"being computed by process {other.pid}"):
            store.start_run("r1", tmp_path / "r1", {}, {})
    finally:
        other.kill()
        other.wait()
    store.start_run("r1", tmp_path / "r1", {}, {})  # it died: the run resumes here
    assert store.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1


def test_garbage_adapter_config_is_one_line(tmp_path):
    from selfexplain.errors import TrainingError
    from selfexplain.training import check_adapter_dir

    (tmp_path / "adapter_config.json").write_text('{"r": 16}')
    with pytest.raises(TrainingError, match="not a PEFT adapter config"):
        check_adapter_dir(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(TrainingError, match="unreadable"):
        check_adapter_dir(tmp_path)
