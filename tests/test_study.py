"""Seeds, learning curves and withheld-vector controls (runs/study.py) on tiny in-code models,
and the seed-pooled bootstrap checked against hand-computed bootstrap distributions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from selfexplain import RunConfig, run
from selfexplain.errors import ConfigError
from selfexplain.metrics import bootstrap_mean, pooled_mean, pooled_paired_difference, seed_spread


# ----- the pooled bootstrap -----------------------------------------------------------------
def test_pooled_ci_matches_hand_computation():
    """Seeds A = [0, 1], B = [1, 1]. A replicate draws 2 seeds, then 2 items within each drawn
    seed. One slot's mean X: seed A (1/2) gives 0, .5, 1 with 1/4, 1/2, 1/4; seed B gives 1. So
    P(X=0)=1/8, P(X=.5)=1/4, P(X=1)=5/8, and the replicate (X1+X2)/2 is 0 w.p. 1/64, .25 w.p. 4/64,
    .5 w.p. 14/64, .75 w.p. 20/64, 1 w.p. 25/64: its 2.5th percentile is .25 (CDF 1/64 < .025 <
    5/64) and its 97.5th is 1. The value is the mean of the seed means, (.5 + 1) / 2."""
    est = pooled_mean([[0, 1], [1, 1]], seed=0, n_boot=20000)
    assert est.value == pytest.approx(0.75)
    assert (est.low, est.high) == (pytest.approx(0.25), pytest.approx(1.0))
    assert est.n == 4
    # constant items: only seeds vary -> means .5 / 1 with 1/4, 1/2, 1/4 -> [0.5, 1.0]
    const = pooled_mean([[0.5] * 6, [1.0] * 6], seed=1)
    assert (const.value, const.low, const.high) == (pytest.approx(0.75), pytest.approx(0.5), pytest.approx(1.0))


def test_pooled_paired_difference_is_the_pooled_mean_of_differences():
    a = [[1, 1, 0, 1], [0, 1, 1]]
    b = [[0, 1, 0, 0], [0, 0, 1]]
    d = pooled_paired_difference(a, b, seed=3)
    assert d.value == pytest.approx(np.mean([2 / 4, 1 / 3]))
    assert d.to_dict() == pooled_mean([[1, 0, 0, 1], [0, 1, 0]], seed=3).to_dict()


def test_one_seed_is_the_item_bootstrap():
    x = [0, 1, 1, 0, 1, 1, 1]
    assert pooled_mean([x], seed=5) == bootstrap_mean(x, seed=5)


def test_seed_spread():
    s = seed_spread([0.6, 0.7, 0.8])
    assert s["sd"] == pytest.approx(0.1) and (s["min"], s["max"], s["n_seeds"]) == (0.6, 0.8, 3)


# ----- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"seeds": "0,x"}, "--seeds must be comma-separated integers"),
    ({"seeds": "0,1,0"}, "'0' is listed twice"),
    ({"seeds": "-1"}, "outside [0,"),
    ({"train_sizes": "0"}, "--train-sizes: 0 in '0' is outside [8,"),
    ({"train_sizes": "250,abc"}, "--train-sizes must be comma-separated integers"),
    ({"train_sizes": "250,500", "n_train": 300}, "drop --n-train"),
    ({"train_subset": 3}, "--train-subset must be >= 8"),
])
def test_bad_study_options_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError) as info:
        RunConfig(**kwargs).resolved()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_cli_rejects_bad_seeds(capsys):
    from selfexplain.cli import main

    with pytest.raises(SystemExit) as info:
        main(["run", "--seeds", "0,x"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --seeds must be comma-separated integers")
    with pytest.raises(SystemExit) as info:
        main(["curve", "--benchmarks", "patching"])
    assert info.value.code == 2 and "needs --train-sizes" in capsys.readouterr().err


def test_training_subsets_are_nested_and_keep_the_test_set():
    from selfexplain.records import Provenance, Record
    from selfexplain.runs.study import training_subset

    recs = [Record(f"r{i}", "b", "train" if i % 4 else "test", "g", "q", "a", Provenance("s", "t", {}, 0))
            for i in range(40)]
    small, large = training_subset(recs, 8, seed=2), training_subset(recs, 16, seed=2)
    train = lambda rs: [r.id for r in rs if r.split == "train"]  # noqa: E731
    assert len(train(small)) == 8 and len(train(large)) == 16 and set(train(small)) < set(train(large))
    assert [r.id for r in small if r.split == "test"] == [r.id for r in recs if r.split == "test"]
    assert training_subset(recs, 100, seed=2) == recs
    assert set(train(training_subset(recs, 8, seed=3))) != set(train(small))


# ----- tiny-model studies -----------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def random_answers_allowed():
    """Random tiny models rarely pick an option; keep their items (as tests/test_run.py does)."""
    from selfexplain.benchmarks import register_benchmark
    from selfexplain.benchmarks.patching.benchmark import PatchingBenchmark

    register_benchmark("patching", lambda: PatchingBenchmark(option_answers_only=False))
    yield
    register_benchmark("patching", PatchingBenchmark)


@pytest.fixture()
def build_counter(monkeypatch):
    """Counts ground-truth builds (calls of the benchmark's build_records)."""
    from selfexplain.benchmarks.patching.benchmark import PatchingBenchmark

    calls = []
    original = PatchingBenchmark.build_records

    def counted(self, subject, config, progress=None):
        calls.append((config.seed, config.n_train))
        return original(self, subject, config, progress)

    monkeypatch.setattr(PatchingBenchmark, "build_records", counted)
    return calls


@pytest.fixture(scope="module")
def curve_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("curve")


def test_curve_reuses_one_ground_truth(tiny_dirs, curve_dir, build_counter):
    cfg = RunConfig(subject=str(tiny_dirs["subject"]), output_dir=str(curve_dir), train_sizes="8,16,32", n_test=8,
                    epochs=1, seed=4, explainers="self,nearest-neighbour,layer-token-prior,never-changes")
    study = run(cfg)
    assert build_counter == [(4, 32)]  # one ground truth, built with the largest size, for three points
    bench = study["benchmarks"]["patching"]
    assert [p["train_size"] for p in bench["points"]] == [8, 16, 32]
    assert [p["n_train"] for p in bench["points"]] == [[8], [16], [32]]
    from selfexplain.runs.store import Store

    store = Store.for_output_dir(curve_dir)
    tests, trains = [], []
    for r in study["runs"]:
        records, stats = store.ground_truth(r["run_id"], "patching")
        tests.append([x.id for x in records if x.split == "test"])
        trains.append({x.id for x in records if x.split == "train"})
    assert tests[0] == tests[1] == tests[2] and len(tests[0]) == 8  # one test set
    # each point trains on its subset; steps grow with the records at a fixed epoch count (batch 4)
    steps = [p["explainers"]["self"]["steps"][0] for p in bench["points"]]
    assert steps == [2, 4, 8]
    for p in bench["points"]:  # the pooled value of one seed is that run's own estimate
        for name, e in p["explainers"].items():
            assert e["pooled"]["value"] == pytest.approx(e["per_seed"][0])
    curve = bench["curve"]
    assert set(curve["sample_efficiency"]) <= set(bench["points"][-1]["explainers"])
    assert curve["rival"] in ("nearest-neighbour", "layer-token-prior", "never-changes")
    out = Path(study["study_dir"])
    page = (out / "study.html").read_text()
    assert '"type":"log"' in page.replace(" ", "") and "learning curve" in page and "training records" in page
    assert "| self |" in (out / "study.md").read_text()
    # rerun: everything comes back from the store, no ground truth or training again
    again = run(cfg)
    assert build_counter == [(4, 32)]
    assert json.dumps(again["benchmarks"], sort_keys=True) == json.dumps(study["benchmarks"], sort_keys=True)


def test_multi_seed_study_pools_every_seed(tiny_dirs, tmp_path, build_counter):
    cfg = RunConfig(subject=str(tiny_dirs["subject"]), output_dir=str(tmp_path), seeds="0,1", n_train=16, n_test=8,
                    epochs=1, explainers="self,nearest-neighbour,never-changes")
    study = run(cfg)
    assert sorted(s for s, _ in build_counter) == [0, 1]  # the seed draws the ground truth
    point = study["benchmarks"]["patching"]["points"][0]
    singles = [run(RunConfig(**{**cfg.__dict__, "seeds": "", "seed": s})) for s in (0, 1)]  # the same runs, reread
    for name, e in point["explainers"].items():
        per_seed = [r["benchmarks"]["patching"]["explainers"][name]["exact_match"]["value"] for r in singles]
        assert e["per_seed"] == per_seed
        assert e["pooled"]["value"] == pytest.approx(np.mean(per_seed))
        assert e["pooled"]["n"] == 16
    pair = point["self_vs_best_other"]
    assert pair["n_seeds"] == 2 and pair["n"] == 16
    assert pair["best_other"] == max(("nearest-neighbour", "never-changes"),
                                     key=lambda n: point["explainers"][n]["pooled"]["value"])
    md = (Path(study["study_dir"]) / "study.md").read_text()
    assert "mean of 2 seeds" in md and "across-seed SD" in md and "resampling 2 seed(s)" in md


# ----- withheld-vector controls -------------------------------------------------------------------
def test_withheld_vector_controls(tiny_dirs, tmp_path):
    cfg = RunConfig(subject=str(tiny_dirs["subject"]), other=str(tiny_dirs["other"]), output_dir=str(tmp_path),
                    n_train=16, n_test=8, epochs=1, seed=2,
                    explainers="self,other,self-no-vector,other-no-vector,never-changes")
    res = run(cfg)
    bench = res["benchmarks"]["patching"]
    assert {"self-no-vector", "other-no-vector"} <= set(bench["explainers"])
    assert bench["explainers"]["self-no-vector"]["reference"]  # a control, never "the best other"
    assert bench["self_vs_best_other"]["best_other"] not in ("self-no-vector", "other-no-vector")
    controls = bench["vector_controls"]
    assert set(controls) == {"self-no-vector", "other-no-vector"}
    assert controls["self-no-vector"]["n"] == 8
    assert any(n.startswith("Withheld-vector control: self - self-no-vector") for n in bench["notes"])
    run_dir = Path(res["run_dir"])
    assert (run_dir / "adapters" / "other-no-vector" / "projector.pt").is_file()  # trained like other
    # the control's answers do not depend on the vector: scrambled vectors give the same answers
    import torch

    from selfexplain.runs.run import Run
    from selfexplain.runs.store import Store

    records, _ = Store.for_output_dir(tmp_path).ground_truth(res["run_id"], "patching")
    runner = Run(cfg)
    truths = {"patching": (records, {})}
    control = runner.trained("self-no-vector", truths)
    test = [r for r in records if r.split == "test"]
    scrambled = [type(r)(**{**r.__dict__, "vector": torch.randn_like(r.vector) * 50}) for r in test]
    assert [e.text for e in control.explain(test)] == [e.text for e in control.explain(scrambled)]
    # same records, same steps: only the vectors differ
    steps = [json.loads((run_dir / "adapters" / n / "selfexplain_training.json").read_text())["steps"]
             for n in ("self", "self-no-vector")]
    assert steps[0] == steps[1]


def test_controls_are_skipped_without_vectors(tiny_dirs, tmp_path):
    cfg = RunConfig(benchmarks="ablation", subject=str(tiny_dirs["subject"]), output_dir=str(tmp_path), n_train=16,
                    n_test=8, epochs=1, explainers="never-changes,self-no-vector")
    bench = run(cfg)["benchmarks"]["ablation"]
    assert set(bench["explainers"]) == {"never-changes"}


def test_plugin_benchmark_gets_seeds_and_curves(tiny_dirs, tmp_path):
    """A benchmark from outside the package (lower-is-better primary metric, no self) runs as a
    two-seed learning curve through the plug-in contract alone."""
    from plugins.echo_benchmark import register

    register()
    study = run(RunConfig(benchmarks="toy-echo", subject=str(tiny_dirs["subject"]), output_dir=str(tmp_path),
                          seeds="3,4", train_sizes="8,16", n_test=6))
    bench = study["benchmarks"]["toy-echo"]
    assert bench["primary_metric"] == "error_rate" and not bench["higher_is_better"]
    assert [p["train_size"] for p in bench["points"]] == [8, 16]
    for p in bench["points"]:
        e = p["explainers"]["nearest-neighbour"]
        assert len(e["per_seed"]) == 2 and e["pooled"]["value"] == pytest.approx(np.mean(e["per_seed"]))
        assert p["self_vs_best_other"] is None  # no self explainer on this benchmark
    assert bench["curve"]["sample_efficiency"] == {}  # defined for higher-is-better metrics only
    assert "toy-echo" in (Path(study["study_dir"]) / "study.html").read_text()
