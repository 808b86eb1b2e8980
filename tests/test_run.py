"""End to end on tiny models: records, six explainers, metrics, files, determinism."""

import json

import pytest

from selfexplain import RunConfig, run


@pytest.fixture(scope="module", autouse=True)
def random_answers_allowed():
    """Random tiny models rarely pick an option; keep their items (registry extension API)."""
    from selfexplain.benchmarks import register_benchmark
    from selfexplain.benchmarks.patching.benchmark import PatchingBenchmark

    register_benchmark("patching", lambda: PatchingBenchmark(option_answers_only=False))
    yield
    register_benchmark("patching", PatchingBenchmark)


@pytest.fixture(scope="module")
def results(tiny_dirs, tmp_path_factory, random_answers_allowed):
    out = tmp_path_factory.mktemp("runs")
    cfg = RunConfig(subject=str(tiny_dirs["subject"]), other=str(tiny_dirs["other"]), output_dir=str(out),
                    n_train=24, n_test=8, epochs=1, seed=1)
    return cfg, run(cfg)


def test_run_writes_results(results):
    cfg, res = results
    bench = res["benchmarks"]["patching"]
    assert set(bench["explainers"]) == {"self", "other", "zero-shot", "4-shot", "nearest-neighbour",
                                        "never-changes", "layer-token-prior", "attribution-patching"}
    for summary in bench["explainers"].values():
        em = summary["exact_match"]
        assert 0 <= em["low"] <= em["value"] <= em["high"] <= 1
    assert bench["explainers"]["never-changes"]["exact_match"]["value"] == pytest.approx(0.5)
    assert bench["self_vs_best_other"]["metric"] == "exact_match"
    from pathlib import Path

    run_dir = Path(res["run_dir"])
    for name in ("config.json", "environment.json", "results.json", "results.md", "report.html"):
        assert (run_dir / name).is_file()
    assert (run_dir.parent / "selfexplain.db").is_file()
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 1
    assert RunConfig.load(run_dir / "config.json") == cfg.resolved()  # `explain --run` reads it back
    assert (run_dir / "adapters" / "other" / "projector.pt").is_file()
    assert "| self |" in (run_dir / "results.md").read_text() or "self" in (run_dir / "results.md").read_text()


def test_same_seed_same_metrics(results, tmp_path):
    cfg, res = results
    again = run(RunConfig(**{**cfg.__dict__, "output_dir": str(tmp_path)}))
    strip = lambda r: {k: {m: v[m] for m in ("exact_match", "changed_macro_f1", "content_match")}  # noqa: E731
                       for k, v in r["benchmarks"]["patching"]["explainers"].items()}
    assert strip(again) == strip(res)


def test_rerun_reuses_saved_steps(results):
    cfg, res = results
    again = run(cfg)  # same directory: records and predictions are read back, not recomputed
    dump = lambda r: json.dumps(r["benchmarks"]["patching"]["explainers"], sort_keys=True)  # noqa: E731 (NaN-safe)
    assert dump(again) == dump(res)


@pytest.fixture(scope="module")
def multitask(tiny_dirs, tmp_path_factory, random_answers_allowed):
    out = tmp_path_factory.mktemp("multitask")
    cfg = RunConfig(benchmarks="patching,ablation", subject=str(tiny_dirs["subject"]), other=str(tiny_dirs["other"]),
                    explainers="self,never-changes,hint-follow,occlusion,attention-last", output_dir=str(out),
                    n_train=24, n_test=8, epochs=1, seed=2, n_attribution=4)
    return cfg, run(cfg)


def test_one_adapter_serves_both_benchmarks(multitask):
    from pathlib import Path

    _, res = multitask
    run_dir = Path(res["run_dir"])
    info = json.loads((run_dir / "adapters" / "self" / "selfexplain_training.json").read_text())
    assert info["n_records"] == 48  # 24 patching + 24 ablation training records, one adapter
    assert set(res["benchmarks"]["patching"]["explainers"]) == {"self", "never-changes"}
    ablation = res["benchmarks"]["ablation"]
    assert set(ablation["explainers"]) == {"self", "never-changes", "hint-follow", "occlusion", "attention-last"}
    assert ablation["explainers"]["occlusion"]["n_items"] == 4 and ablation["explainers"]["occlusion"]["subsample"]
    assert ablation["explainers"]["self"]["n_items"] == 8
    assert ablation["self_vs"]["occlusion"]["n"] == 4  # paired on the attribution subsample
    assert ablation["self_vs_best_other"]["best_other"] in ("never-changes", "hint-follow")


def test_resume_loads_the_saved_adapter(multitask):
    from pathlib import Path

    cfg, res = multitask
    run_dir = Path(res["run_dir"])
    info = run_dir / "adapters" / "self" / "selfexplain_training.json"
    stamp = info.stat().st_mtime_ns
    from selfexplain.runs.store import Store

    store = Store.open_existing(cfg.output_dir)
    with store.transaction() as db:  # forget self's ablation answers: they are recomputed
        db.execute("DELETE FROM predictions WHERE explainer='self' AND benchmark='ablation'")
        db.execute("DELETE FROM explainer_runs WHERE explainer='self' AND benchmark='ablation'")
    again = run(cfg)
    assert info.stat().st_mtime_ns == stamp  # not retrained
    dump = lambda r: json.dumps(r["benchmarks"]["ablation"]["explainers"]["self"]["exact_match"])  # noqa: E731
    assert dump(again) == dump(res)


def test_rerun_with_fewer_explainers_reuses_the_run(results):
    from pathlib import Path

    cfg, res = results
    again = run(RunConfig(**{**cfg.__dict__, "explainers": "self,never-changes"}))
    assert again["run_dir"] == res["run_dir"]  # the explainer list is not part of a run's identity
    bench = again["benchmarks"]["patching"]
    assert set(bench["explainers"]) == {"self", "never-changes"}
    dump = lambda r: json.dumps(r["explainers"]["self"], sort_keys=True)  # noqa: E731 (NaN-safe)
    assert dump(bench) == dump(res["benchmarks"]["patching"])
    assert json.loads((Path(res["run_dir"]) / "results.json").read_text())["config"]["explainers"] == \
        "self,never-changes"
