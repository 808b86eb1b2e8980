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
