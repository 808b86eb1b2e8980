import math

import pytest

from selfexplain.metrics import bootstrap_macro_f1, bootstrap_mean, macro_f1, paired_difference


def test_bootstrap_mean_value_and_interval():
    est = bootstrap_mean([1, 0, 1, 1], seed=0)
    assert est.value == 0.75 and est.n == 4
    assert 0 <= est.low <= 0.75 <= est.high <= 1
    assert bootstrap_mean([1, 0, 1, 1], seed=0) == est  # deterministic


def test_bootstrap_constant_has_zero_width():
    est = bootstrap_mean([1.0] * 10)
    assert (est.low, est.value, est.high) == (1.0, 1.0, 1.0)


def test_empty_is_nan():
    assert math.isnan(bootstrap_mean([]).value)


@pytest.mark.parametrize("truth,pred,expected", [
    ([True, False], [True, False], 1.0),
    ([True, True, False, False], [True, False, False, False], (2 / 3 + 0.8) / 2),  # hand-computed
    ([True, False], [None, None], 0.0),   # unparseable answers are never right
    ([False, False], [False, False], 0.5),  # the absent class scores 0
])
def test_macro_f1(truth, pred, expected):
    assert macro_f1(truth, pred) == pytest.approx(expected)


def test_bootstrap_macro_f1_contains_value():
    truth = [True, False] * 20
    pred = [True, False] * 15 + [False, True] * 5
    est = bootstrap_macro_f1(truth, pred)
    assert est.value == pytest.approx(0.75)
    assert est.low < 0.75 < est.high


def test_paired_difference():
    est = paired_difference([1, 1, 1, 0], [0, 1, 0, 0])
    assert est.value == pytest.approx(0.5)
    assert est.low >= 0


def test_said_changed_rate_and_one_sided_caveat():
    """An explainer that answers one way on >= 95% of items is named so in the verdict line."""
    from selfexplain.benchmarks.ablation.benchmark import AblationBenchmark
    from selfexplain.explainers.base import Explanation
    from selfexplain.records import Provenance, Record
    from selfexplain.report.tables import comparison_lines

    bench = AblationBenchmark()
    one_sided = bench.one_sided
    recs = [Record(f"r{i}", "ablation", "test", f"g{i}", "q", "changes to B" if i % 2 else "unchanged from A",
                   Provenance("s", "t", {}, 0), {"unhinted_answer": "B" if i % 2 else "A", "changed": bool(i % 2)})
            for i in range(40)]
    answers = ["unchanged from A"] * 39 + ["nonsense"]  # 39 parsed, all 'unchanged'
    scores = bench.score(recs, [Explanation(a, 1, 0.0) for a in answers])
    stats = bench.summarize(recs, scores, seed=0)
    assert stats["said_changed_rate"] == 0.0
    assert one_sided(stats) == "answered 'unchanged' on 100.0% of the items"
    assert one_sided({"said_changed_rate": 0.5}) == "" and one_sided({}) == ""
    assert one_sided({"said_changed_rate": 0.96}) == "answered 'changes' on 96.0% of the items"
    pair = {"metric": "exact_match", "best_other": "other",
            "difference": {"value": 0.2, "low": 0.1, "high": 0.3}}
    bench_result = {"self_vs_other": pair, "explainers": {"other": {**stats, "one_sided": one_sided(stats)}},
                    "metrics": [m.to_dict() for m in bench.metrics]}
    [line] = comparison_lines(bench_result)
    assert line.endswith("self wins (other answered 'unchanged' on 100.0% of the items: it learned a constant "
                         "answer, not the task).")
    bench_result["explainers"]["other"] = {"said_changed_rate": 0.4}
    assert comparison_lines(bench_result)[0].endswith("self wins.")
