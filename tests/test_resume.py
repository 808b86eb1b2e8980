"""kill -9 a real (tiny) run at several points; the same command resumes it and finishes with
the same metrics and the same rows as an uninterrupted run: nothing lost, nothing duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from selfexplain.runs.store import Store

# The CLI, with the patching benchmark keeping non-option answers (random tiny models rarely pick
# an option), as tests/test_run.py does in-process.
LAUNCH = ("import sys; from selfexplain.benchmarks import register_benchmark; "
          "from selfexplain.benchmarks.patching.benchmark import PatchingBenchmark; "
          "register_benchmark('patching', lambda: PatchingBenchmark(option_answers_only=False)); "
          "from selfexplain.cli import main; sys.argv[0] = 'selfexplain'; main()")

# Crash points, in the order a run reaches them; each kill is followed by a rerun that crashes
# at the next point, then a final rerun without a crash.
CRASHES = ["ground-truth:2", "train-step:3", "adapter-saved:1", "predictions-chunk:2", "report:1"]


def _run(tiny_dirs, out, crash: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SELFEXPLAIN_FP32": "1"}
    env.pop("SELFEXPLAIN_CRASH_AT", None)
    if crash:
        env["SELFEXPLAIN_CRASH_AT"] = crash
    args = ["run", "--benchmarks", "patching,ablation", "--subject", str(tiny_dirs["subject"]),
            "--explainers", "self,never-changes,nearest-neighbour,hint-follow,occlusion", "--n-attribution", "4",
            "--n-train", "24", "--n-test", "8", "--epochs", "1", "--seed", "3", "--output-dir", str(out)]
    return subprocess.run([sys.executable, "-c", LAUNCH, *args], env=env, capture_output=True, text=True,
                          timeout=600)


def _metrics(results: dict) -> dict:
    """Every metric estimate of every explainer, and the ground-truth statistics (no timings)."""
    out = {}
    for name, bench in results["benchmarks"].items():
        out[name] = {"gt": {k: v for k, v in bench["ground_truth"].items() if k != "seconds"},
                     "explainers": {e: {m: v for m, v in s.items() if isinstance(v, dict) and "value" in v}
                                    for e, s in bench["explainers"].items()},
                     "self_vs": bench["self_vs"]}
    return json.loads(json.dumps(out))  # NaN-safe comparison through JSON text


def _rows(out) -> tuple[dict, list]:
    store = Store.open_existing(out)
    (run,) = store.runs()
    preds = store.db.execute("SELECT benchmark, explainer, record_id, text FROM predictions ORDER BY "
                             "benchmark, explainer, record_id").fetchall()
    return store.counts(run.id), preds


@pytest.fixture(scope="module")
def reference(tiny_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = _run(tiny_dirs, out, None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = Store.open_existing(out)
    (run,) = store.runs()
    return store.results(run.id), _rows(out)


@pytest.mark.slow
def test_killed_runs_resume_to_identical_results(tiny_dirs, tmp_path, reference):
    ref_results, (ref_counts, ref_preds) = reference
    for crash in CRASHES:
        proc = _run(tiny_dirs, tmp_path, crash)
        assert proc.returncode == -signal.SIGKILL, f"{crash}: expected a kill, got {proc.returncode}\n{proc.stderr[-2000:]}"
        store = Store.open_existing(tmp_path)
        # Atomic chunks: each explainer has no answers or all of its items', never a part.
        full = {(b, e): n for b, e, n in store.db.execute(
            "SELECT benchmark, explainer, COUNT(*) FROM predictions GROUP BY benchmark, explainer")}
        expected = {(b, e): s["n_items"] for b, bench in ref_results["benchmarks"].items()
                    for e, s in bench["explainers"].items()}
        assert all(n == expected[k] for k, n in full.items()), (crash, full)
        store.close()
    proc = _run(tiny_dirs, tmp_path, None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = Store.open_existing(tmp_path)
    (run,) = store.runs()
    assert run.status == "finished"
    assert _metrics(store.results(run.id)) == _metrics(ref_results)
    counts, preds = _rows(tmp_path)
    assert counts == ref_counts  # no record or prediction lost or duplicated
    assert preds == ref_preds
    assert (tmp_path / run.id / "report.html").is_file()

