"""Sharded runs (issue 23): `run --shard I/N` on N processes, then `merge`, equals the unsharded run
(records, answers, per-item scores, metrics, results); malformed shard values and mismatched shard
sets fail with one line before anything loads or is written."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from selfexplain import cli
from selfexplain.config import RunConfig, parse_shard
from selfexplain.errors import ConfigError
from selfexplain.records import Provenance, Record
from selfexplain.runs.run import run_dir_for, run_identity, shard_ids
from selfexplain.runs.store import Store

# Two benchmarks (one multitask adapter), a LoRA explainer, a subsampled slow baseline (occlusion:
# 4 of 8 items), a fitted one (hint-follow) and trivial ones.
ARGS = ["--benchmarks", "patching,ablation", "--explainers", "self,never-changes,nearest-neighbour,hint-follow,occlusion",
        "--n-attribution", "4", "--n-train", "24", "--n-test", "8", "--epochs", "1", "--seed", "3"]


@pytest.fixture(scope="module", autouse=True)
def random_answers_allowed():
    """Random tiny models rarely pick an option; keep their items (as tests/test_run.py does)."""
    from selfexplain.benchmarks import register_benchmark
    from selfexplain.benchmarks.patching.benchmark import PatchingBenchmark

    register_benchmark("patching", lambda: PatchingBenchmark(option_answers_only=False))
    yield
    register_benchmark("patching", PatchingBenchmark)


def invoke(*args: str) -> tuple[int, str, str]:
    """`selfexplain ARGS` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main(list(args))
        except SystemExit as exc:
            code = exc.code
    return (code if isinstance(code, int) else (0 if code is None else 1)), out.getvalue(), err.getvalue()


def one_line_error(code: int, out: str, err: str, *fragments: str) -> str:
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    line = err.strip()
    assert "\n" not in line and line.startswith("error: "), err
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


@pytest.fixture(scope="module")
def runs(tiny_dirs, tmp_path_factory):
    """The unsharded run, its two shards and their merge (every command through the CLI). Chunks
    (and so shard blocks) of 2 answers: each shard gets 2 of the 4 blocks of 8 test records."""
    import selfexplain.runs.run as run_module

    chunk, run_module.PREDICTION_CHUNK = run_module.PREDICTION_CHUNK, 2
    try:
        return _runs(tiny_dirs, tmp_path_factory)
    finally:
        run_module.PREDICTION_CHUNK = chunk


def _runs(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("shard")
    subject = ["--subject", str(tiny_dirs["subject"])]
    code, out, err = invoke("run", *ARGS, *subject, "--output-dir", str(root / "full"))
    assert code == 0, err[-3000:]
    for i in (2, 1):  # the order shards finish in does not matter
        code, out, err = invoke("run", *ARGS, *subject, "--output-dir", str(root / "sharded"), "--shard", f"{i}/2")
        assert code == 0, err[-3000:]
        assert f"shard {i}/2 of run" in out and "selfexplain merge" in out
    shards = [str(root / "sharded" / f"shard-{i}-of-2") for i in (1, 2)]
    code, out, err = invoke("merge", *shards)
    assert code == 0, err[-3000:]
    assert "merged 2 shards" in out
    return root, shards


def _run(store: Store) -> str:
    (run,) = store.runs()
    assert run.status == "finished"
    return run.id


def _rows(out: Path) -> dict:
    """Every row a run stores, without its id and timings."""
    store = Store.open_existing(out)
    run_id = _run(store)
    db = store.db
    rows = {
        "records": db.execute("SELECT benchmark, id, position, split, grp, query, answer, provenance, context, vector, "
                              "vector_shape FROM records WHERE run_id=? ORDER BY benchmark, position", (run_id,)).fetchall(),
        "ground_truth": [(b, {k: v for k, v in json.loads(s).items() if k != "seconds"}) for b, s in db.execute(
            "SELECT benchmark, stats FROM ground_truth WHERE run_id=? ORDER BY benchmark", (run_id,))],
        "answers": db.execute("SELECT benchmark, explainer, record_id, position, text, scores, structured FROM "
                              "predictions WHERE run_id=? ORDER BY benchmark, explainer, position", (run_id,)).fetchall(),
        "explainer_runs": db.execute("SELECT benchmark, explainer, n_items FROM explainer_runs WHERE run_id=? ORDER BY "
                                     "benchmark, explainer", (run_id,)).fetchall(),
        "metrics": db.execute("SELECT benchmark, explainer, metric, value, low, high, n FROM metrics WHERE run_id=? "
                              "ORDER BY benchmark, explainer, metric", (run_id,)).fetchall(),
        "counts": store.counts(run_id),
    }
    store.close()
    return rows


def _steady(results: dict) -> str:
    """A run's results without what names or times the process (ids, paths, environment, costs,
    timings), as JSON text (NaN equals NaN there)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("cost", "seconds", "fit_seconds")}
        if isinstance(x, list):
            return [strip(v) for v in x if not (isinstance(v, dict) and v.get("kind") == "seconds")]
        return x
    drop = ("run_dir", "run_id", "environment", "config")
    return json.dumps(strip({k: v for k, v in results.items() if k not in drop}), sort_keys=True)


def test_merged_shards_equal_the_unsharded_run(runs):
    root, shards = runs
    full, merged = _rows(root / "full"), _rows(root / "sharded")
    assert merged["counts"] == full["counts"]
    for table in ("records", "ground_truth", "answers", "explainer_runs", "metrics"):
        assert merged[table] == full[table], table
    # each shard answered its share: disjoint, together every answer
    parts = []
    for path in shards:
        store = Store.open_existing(path)
        (run,) = store.runs()
        assert run.status == "shard-finished"
        parts.append({tuple(r) for r in store.db.execute("SELECT benchmark, explainer, record_id FROM predictions")})
        store.close()
    assert parts[0] and parts[1] and not parts[0] & parts[1]
    assert len(parts[0] | parts[1]) == full["counts"]["predictions"]
    a, b = Store.open_existing(root / "full"), Store.open_existing(root / "sharded")
    ra, rb = a.results(_run(a)), b.results(_run(b))
    assert _steady(rb) == _steady(ra)
    assert rb["config"]["shard"] == "" and rb["environment"]["merged_from"]
    # the merged run is the one `run` without --shard would have made in the shards' --output-dir
    cfg = RunConfig.load(Path(rb["run_dir"]) / "config.json")
    assert run_dir_for(cfg) == Path(rb["run_dir"]) and Path(rb["run_dir"]).parent == root / "sharded"
    assert (Path(rb["run_dir"]) / "adapters" / "self" / "adapter_model.safetensors").is_file()
    code, out, err = invoke("report", rb["run_id"], "--output-dir", str(root / "sharded"))
    assert code == 0, err
    assert Path(out.strip()).is_file()


def test_shard_is_not_part_of_the_run_identity():
    base = RunConfig(benchmarks="patching").resolved()
    for shard in ("1/2", "2/2", "3/7"):
        sharded = RunConfig(benchmarks="patching", shard=shard).resolved()
        assert run_identity(sharded) == run_identity(base)
        assert run_dir_for(sharded) == run_dir_for(base)
    assert base.store_dir() == Path("runs")
    assert RunConfig(shard="2/4").resolved().store_dir() == Path("runs") / "shard-2-of-4"


def test_shards_partition_the_test_split_in_blocks():
    prov = Provenance("tiny", "t", {}, 0)
    records = [Record(f"r{i:02d}", "b", "test", str(i), "q", "a", prov, {}) for i in range(11)]
    for n in (1, 2, 3, 11, 12):
        for block in (1, 2, 32):
            parts = [shard_ids(records, (i, n), block) for i in range(1, n + 1)]
            assert set().union(*parts) == {r.id for r in records}
            assert sum(map(len, parts)) == len(records)
    assert shard_ids(records, (1, 2), 2) == {"r00", "r01", "r04", "r05", "r08", "r09"}
    assert shard_ids(records, (2, 2), 4) == {"r04", "r05", "r06", "r07"}
    assert shard_ids(records, None) == {r.id for r in records}


@pytest.mark.parametrize("value", ["3/2", "0/0", "a/b", "0/2", "1/0", "-1/2", "1", "1/2/3", "/", "1.0/2", " / 2"])
def test_malformed_shard_is_one_line_before_anything_loads(value, tmp_path):
    with pytest.raises(ConfigError, match="I/N"):
        parse_shard(value)
    code, out, err = invoke("run", "--subject", str(tmp_path / "no-such-model"), "--output-dir", str(tmp_path / "o"),
                            "--shard", value)
    one_line_error(code, out, err, "--shard", "1 <= I <= N")
    assert not (tmp_path / "o").exists()  # the model was never looked for, nothing was written


def test_shard_values():
    assert parse_shard("") is None and parse_shard("1/1") == (1, 1) and parse_shard(" 2/4 ") == (2, 4)
    code, out, err = invoke("run", "--shard", "1/2", "--seeds", "0,1")
    one_line_error(code, out, err, "--shard 1/2", "--seeds")


def _copy(src: str, dst: Path, sql: str = "", params: tuple = ()) -> str:
    shutil.copytree(src, dst)
    if sql:
        db = sqlite3.connect(dst / "selfexplain.db")
        db.execute(sql, params)
        db.commit()
        db.close()
    return str(dst)


def _with_config(src: str, dst: Path, **changes) -> str:
    db = sqlite3.connect(Path(src) / "selfexplain.db")
    config = {**json.loads(db.execute("SELECT config FROM runs").fetchone()[0]), **changes}
    db.close()
    return _copy(src, dst, "UPDATE runs SET config=?", (json.dumps(config),))


def test_merge_refuses_what_is_not_one_complete_run(runs, tmp_path):
    root, (one, two) = runs
    cases = {
        "missing": ([one], ["shard 2/2", "missing", "pass all 2"]),
        "same directory twice": ([one, one, two], ["given twice"]),
        "same shard twice": ([one, _copy(one, tmp_path / "copy"), two], ["shard 1/2 given twice"]),
        "different run": ([one, _with_config(two, tmp_path / "seed", seed=4)], ["different runs", "seed"]),
        "different places": ([one, _with_config(two, tmp_path / "elsewhere", output_dir="/elsewhere")],
                             ["different --output-dir", "pass --output-dir"]),
        "different split": ([one, _with_config(two, tmp_path / "n3", shard="2/3")], ["split the run differently"]),
        "incomplete": ([one, _copy(two, tmp_path / "partial", "UPDATE runs SET status='running', pid=NULL")],
                       ["shard 2/2", "not complete", "--shard 2/2"]),
        "different ground truth": ([one, _copy(two, tmp_path / "gt", "UPDATE records SET answer='x' WHERE rowid=1")],
                                   ["different ground truth"]),
        "not a shard": ([str(root / "full")], ["no shard of a run"]),
        "no store": ([str(tmp_path / "nowhere")], ["no results store"]),
    }
    for name, (dirs, fragments) in cases.items():
        code, out, err = invoke("merge", *dirs)
        one_line_error(code, out, err, *fragments)
    # shards written to different --output-dir (say, on two machines) merge where told
    code, out, err = invoke("merge", one, str(tmp_path / "elsewhere"), "--output-dir", str(tmp_path / "merged"))
    assert code == 0, err[-3000:]
    assert _rows(tmp_path / "merged") == _rows(root / "full")
    # a store that already holds the run, not merged from these shards (here: the unsharded run)
    code, out, err = invoke("merge", one, two, "--output-dir", str(root / "full"))
    one_line_error(code, out, err, "already exists", "another --output-dir")


# `selfexplain merge` in a fresh interpreter, with the tiny-model patching benchmark (as test_resume).
LAUNCH = ("import sys; from selfexplain.benchmarks import register_benchmark; "
          "from selfexplain.benchmarks.patching.benchmark import PatchingBenchmark; "
          "register_benchmark('patching', lambda: PatchingBenchmark(option_answers_only=False)); "
          "from selfexplain.cli import main; sys.argv[0] = 'selfexplain'; main()")


def test_killed_merge_resumes_to_the_same_run(runs, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    root, shards = runs
    out = tmp_path / "merged"
    for crash in ("merge-imported:1", "report:1", None):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "SELFEXPLAIN_FP32": "1"}
        env.pop("SELFEXPLAIN_CRASH_AT", None)
        if crash:
            env["SELFEXPLAIN_CRASH_AT"] = crash
        proc = subprocess.run([sys.executable, "-c", LAUNCH, "merge", *shards, "--output-dir", str(out)], env=env,
                              capture_output=True, text=True, timeout=300)
        if crash:
            assert proc.returncode == -signal.SIGKILL, (crash, proc.returncode, proc.stderr[-2000:])
        else:
            assert proc.returncode == 0, proc.stderr[-3000:]
        if crash == "merge-imported:1":  # killed inside the import: nothing of it is in the store
            store = Store.open_existing(out)
            assert store.runs() == []
            store.close()
    assert _rows(out) == _rows(root / "full")
    store = Store.open_existing(out)
    (run,) = store.runs()
    assert (out / run.id / "report.html").is_file()
    store.close()
