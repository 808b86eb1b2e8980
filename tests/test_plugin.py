"""The plug-in contract: a benchmark written outside the package runs end to end (run, store,
compare, markdown and HTML report), and no shared module names a benchmark."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from selfexplain import RunConfig, run
from selfexplain.benchmarks import list_benchmarks
from plugins.echo_benchmark import EchoBenchmark, register

PACKAGE = Path(__file__).resolve().parent.parent / "selfexplain"


@pytest.fixture(scope="module")
def toy_run(tiny_dirs, tmp_path_factory):
    register()
    out = tmp_path_factory.mktemp("plugin")
    cfg = RunConfig(benchmarks="toy-echo", subject=str(tiny_dirs["subject"]), output_dir=str(out), seed=3)
    return cfg, run(cfg)


def test_toy_benchmark_runs_end_to_end(toy_run):
    cfg, res = toy_run
    bench = res["benchmarks"]["toy-echo"]
    assert res["schema_version"] == 2
    assert set(bench["explainers"]) == {"nearest-neighbour", "most-common-token", "echo-last-word"}
    assert bench["explainers"]["most-common-token"]["family"] == "heuristic"
    for s in bench["explainers"].values():  # the two metrics are complements, item by item
        assert s["error_rate"]["value"] == pytest.approx(1 - s["accuracy"]["value"])
    # lower is better: the leaderboard puts the smallest error rate first, and the self-vs pairs
    # (no self here) are absent
    from selfexplain.report.tables import leaderboard_rows, markdown_summary

    rows = leaderboard_rows(bench)
    errors = [bench["explainers"][r[0]]["error_rate"]["value"] for r in rows]
    assert errors == sorted(errors)
    assert bench["self_vs_best_other"] is None
    md = markdown_summary(res)
    assert "## toy-echo" in md and "error rate (lower is better)" in md and "distinct answers" in md
    html = (Path(res["run_dir"]) / "report.html").read_text()
    assert "toy-echo" in html and "most-common-token" in html and "share of the most common answer" in html


def test_toy_benchmark_store_and_compare(toy_run, tiny_dirs, tmp_path):
    from selfexplain.report.compare import compare_runs
    from selfexplain.runs.store import Store

    cfg, res = toy_run
    other = run(RunConfig(**{**cfg.__dict__, "seed": 4}))
    store = Store.for_output_dir(cfg.output_dir)
    deltas = compare_runs(store, res["run_id"], other["run_id"])
    assert {d.explainer for d in deltas} == set(res["benchmarks"]["toy-echo"]["explainers"])
    assert all(d.metric == "error_rate" for d in deltas)
    assert store.results(res["run_id"])["benchmarks"]["toy-echo"]["primary_metric"] == "error_rate"


def test_toy_benchmark_is_listed(toy_run):
    assert "toy-echo" in list_benchmarks()


def test_explainers_never_see_ground_truth(toy_run):
    """The toy's echo baseline reads an allowed context key; one reading the truth key fails."""
    from selfexplain.records import GroundTruthHidden
    from selfexplain.runs.store import Store

    cfg, res = toy_run
    records, _ = Store.for_output_dir(cfg.output_dir).ground_truth(res["run_id"], "toy-echo")
    view = records[0].without(EchoBenchmark.truth_keys)
    assert view.context["prompt"] == records[0].context["prompt"]
    with pytest.raises(GroundTruthHidden):
        view.context["next_token"]
    with pytest.raises(GroundTruthHidden):
        view.answer


def test_prompt_edit_changes_run_identity(monkeypatch):
    """A benchmark parameter or prompt-file change is a new run directory."""
    from selfexplain.runs.run import run_dir_for

    register()
    cfg = RunConfig(benchmarks="toy-echo")
    before = run_dir_for(cfg)
    monkeypatch.setattr(EchoBenchmark, "ground_truth_version", 2)
    assert run_dir_for(cfg) != before
    monkeypatch.undo()
    from selfexplain.benchmarks import register_benchmark

    register_benchmark("toy-echo", lambda: EchoBenchmark(seed_words=3))
    assert run_dir_for(cfg) != before
    register()


def test_patching_identity_covers_prompt_file():
    from selfexplain.benchmarks import get_benchmark

    ident = get_benchmark("patching").identity()
    assert "selfexplain.benchmarks.patching/prompts.json" in ident["files"]
    assert "selfexplain.data/relations.json" in ident["files"]


def test_old_results_give_one_line_error():
    from selfexplain.errors import ConfigError
    from selfexplain.results import check_results

    with pytest.raises(ConfigError, match="schema_version"):
        check_results({"benchmarks": {}}, "results.json")
    with pytest.raises(ConfigError, match="schema_version 7"):
        check_results({"schema_version": 7}, "results.json")


def test_no_shared_module_names_a_benchmark():
    """Shared code (everything outside selfexplain/benchmarks/<name>/) names no benchmark and none
    of a benchmark's own baselines as a string or module (words in prose, such as the technique
    "activation patching", are fine): each benchmark is discovered from its declaration."""
    from selfexplain.benchmarks import all_baselines

    benchmark_dirs = [p for p in (PACKAGE / "benchmarks").iterdir() if (p / "__init__.py").is_file()]
    names = {p.name for p in benchmark_dirs}
    assert {"patching", "ablation", "rationales"} <= names
    from selfexplain.explainers import FAMILIES
    from selfexplain.techniques.attribution import METHODS

    # baseline names that are also shared vocabulary (a family, a technique's method) are not theirs
    own = set(all_baselines()) - set(FAMILIES) - set(METHODS) - {"random", "majority"}
    words = "|".join(map(re.escape, sorted(names | own, key=len, reverse=True)))
    pattern = re.compile(rf"""["'](?:{words})["']|benchmarks[./](?:{words})\b|\b(?:{words})\.json""")
    offenders = []
    for path in PACKAGE.rglob("*"):
        if path.suffix not in (".py", ".json", ".js", ".css") or any(d in path.parents for d in benchmark_dirs):
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{i}: {line.strip()[:100]}")
    assert not offenders, "shared code names benchmarks:\n" + "\n".join(offenders)
    # the check can fail: a line of the kind it forbids is caught
    assert pattern.search('if bench.name == "patching":') and pattern.search("from selfexplain.benchmarks.ablation import x")
