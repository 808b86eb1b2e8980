"""The results store: transactions, round trips, run lookup, and run comparison."""

from __future__ import annotations

import pytest
import torch

from selfexplain.report.compare import compare_runs
from selfexplain.errors import ConfigError
from selfexplain.explainers import Explanation
from selfexplain.records import Provenance, Record
from selfexplain.runs.store import Store


def _records(n: int, answer=lambda i: "unchanged from Paris") -> list[Record]:
    prov = Provenance("tiny", "test", {"k": 1}, 0)
    return [Record(f"b/{i}", "b", "test" if i % 2 else "train", f"g{i}", f"query {i}", answer(i), prov,
                   {"label": "x", "n": i}, torch.arange(4, dtype=torch.float32) + i if i % 3 == 0 else None)
            for i in range(n)]


def _finished_run(store: Store, run_id: str, values: list[float]) -> None:
    records = _records(2 * len(values))
    test = [r for r in records if r.split == "test"]
    store.start_run(run_id, store.path.parent / run_id, {"subject": "tiny", "seed": 0}, {"torch": "x"})
    store.save_ground_truth(run_id, "b", records, {"changed": 0.5})
    store.add_predictions(run_id, "b", "self", 0, test, [Explanation(f"a{v}", 1, 0.1) for v in values])
    store.complete_predictions(run_id, "b", "self", len(test), {"threshold": 0.3})
    mean = sum(values) / len(values)
    results = {"schema_version": 2, "run_dir": "", "config": {}, "benchmarks": {"b": {
        "primary_metric": "exact_match",
        "explainers": {"self": {"exact_match": {"value": mean, "low": 0.0, "high": 1.0, "n": len(values)}}}}}}
    store.finish_run(run_id, results, {"b": {"self": {r.id: {"exact_match": v} for r, v in zip(test, values)}}})


def test_records_and_predictions_round_trip(tmp_path):
    store = Store(tmp_path / "s.db")
    records = _records(6)
    store.save_ground_truth("r1", "b", records, {"changed": 0.25})
    loaded, stats = Store(tmp_path / "s.db").ground_truth("r1", "b")
    assert stats == {"changed": 0.25}
    assert [r.to_json() for r in loaded] == [r.to_json() for r in records]
    assert all((a.vector is None and b.vector is None) or torch.equal(a.vector, b.vector)
               for a, b in zip(loaded, records))
    assert store.ground_truth("r1", "other") is None


def test_a_failed_transaction_leaves_nothing(tmp_path):
    store = Store(tmp_path / "s.db")
    test = [r for r in _records(4) if r.split == "test"]
    store.add_predictions("r", "b", "self", 0, test[:1], [Explanation("x", 1, 0.0)])
    with pytest.raises(Exception):  # the same record again violates the primary key: all rolled back
        store.add_predictions("r", "b", "self", 1, test, [Explanation("y", 1, 0.0)] * len(test))
    assert list(store.predictions("r", "b", "self")) == [test[0].id]
    assert store.completed("r", "b", "self") is None


def test_finish_stores_results_metrics_and_item_scores(tmp_path):
    store = Store(tmp_path / "s.db")
    _finished_run(store, "run-a-1234", [1.0, 0.0, 1.0, 1.0])
    (run,) = store.runs()
    assert (run.id, run.status, run.subject) == ("run-a-1234", "finished", "tiny")
    assert store.results("run-a-1234")["benchmarks"]["b"]["explainers"]["self"]["exact_match"]["value"] == 0.75
    assert store.counts("run-a-1234") == {"records": 8, "predictions": 4, "explainer_runs": 1, "metrics": 1}
    examples = store.examples("run-a-1234", "b")
    assert [e["predictions"]["self"]["exact_match"] for e in examples] == [1.0, 0.0, 1.0, 1.0]
    assert examples[0]["query"] == "query 1" and examples[0]["context"]["n"] == 1
    assert store.completed("run-a-1234", "b", "self") == (4, {"threshold": 0.3})


def test_resolve_by_id_prefix_and_directory(tmp_path):
    store = Store(tmp_path / "s.db")
    _finished_run(store, "patching-tiny-seed0-aaaa", [1.0])
    _finished_run(store, "patching-tiny-seed0-bbbb", [0.0])
    assert store.resolve("patching-tiny-seed0-aaaa") == "patching-tiny-seed0-aaaa"
    assert store.resolve("patching-tiny-seed0-b") == "patching-tiny-seed0-bbbb"
    assert store.resolve(str(tmp_path / "patching-tiny-seed0-aaaa")) == "patching-tiny-seed0-aaaa"
    with pytest.raises(ConfigError, match="several runs"):
        store.resolve("patching-tiny")
    with pytest.raises(ConfigError, match="no run"):
        store.resolve("nope")


def test_compare_pairs_items_shared_by_both_runs(tmp_path):
    store = Store(tmp_path / "s.db")
    _finished_run(store, "a", [1.0, 0.0, 0.0, 1.0])
    _finished_run(store, "b", [1.0, 1.0, 1.0, 1.0])
    (delta,) = compare_runs(store, "a", "b")
    assert delta.paired and delta.difference.n == 4
    assert delta.difference.value == pytest.approx(0.5)
    assert (delta.a, delta.b) == (0.5, 1.0)
    assert 0.0 <= delta.difference.low <= 0.5 <= delta.difference.high <= 1.0


def test_not_a_store_is_a_one_line_error(tmp_path):
    bad = tmp_path / "selfexplain.db"
    bad.write_text("not sqlite " * 100)
    with pytest.raises(ConfigError, match="not a selfexplain results store"):
        Store(bad)
    with pytest.raises(ConfigError, match="no results store"):
        Store.open_existing(tmp_path / "missing")


def test_cli_runs_and_compare(tmp_path):
    from typer.testing import CliRunner

    from selfexplain.cli import app

    store = Store(tmp_path / "selfexplain.db")
    _finished_run(store, "a", [1.0, 0.0])
    _finished_run(store, "b", [1.0, 1.0])
    runner = CliRunner()
    listed = runner.invoke(app, ["runs", "--output-dir", str(tmp_path)])
    assert listed.exit_code == 0 and "finished" in listed.output
    compared = runner.invoke(app, ["compare", "a", "b", "--output-dir", str(tmp_path)])
    assert compared.exit_code == 0, compared.output
    assert "50.0" in compared.output and "paired" in compared.output


def test_full_disk_in_the_store_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import sqlite3
    import sys

    from selfexplain import cli

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Store, "runs", full)
    Store(tmp_path / "selfexplain.db")
    monkeypatch.setattr(sys, "argv", ["selfexplain", "runs", "--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "disk is full" in err and "rerun to resume" in err


def test_a_run_whose_process_died_is_interrupted(tmp_path):
    import subprocess
    import sys

    store = Store(tmp_path / "s.db")
    store.start_run("alive", tmp_path / "alive", {"subject": "tiny"}, {})
    code = f"from selfexplain.runs.store import Store; Store({str(tmp_path / 's.db')!r}).start_run('dead', '.', {{}}, {{}})"
    subprocess.run([sys.executable, "-c", code], check=True)  # registers a run, then exits
    assert {r.id: r.status for r in store.runs()} == {"alive": "running", "dead": "interrupted"}
