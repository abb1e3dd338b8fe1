"""The paired bootstrap of benchmarks/common.py against cases worked out by hand (or by the normal
approximation of a difference of paired proportions), so the non-inferiority rows rest on a tested
function."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_common", Path(__file__).resolve().parents[1] / "benchmarks" / "common.py"
)
bench_common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_common)
paired_bootstrap_difference = bench_common.paired_bootstrap_difference


def test_identical_vectors_give_zero_everywhere():
    ok = np.random.default_rng(1).random(500) < 0.7
    r = paired_bootstrap_difference(ok, ok.copy(), n_boot=300)
    assert r["difference"] == 0.0 and r["lower"] == 0.0 and r["interval"] == [0.0, 0.0]
    assert r["a_only"] == r["b_only"] == 0


def test_a_right_everywhere_b_wrong_everywhere_is_exactly_100_points():
    r = paired_bootstrap_difference(np.ones(50, bool), np.zeros(50, bool), n_boot=200)
    assert r["difference"] == 100.0 and r["lower"] == 100.0 and r["interval"] == [100.0, 100.0]


def test_known_shift_matches_the_normal_approximation():
    # 1,000 images; A right on all, B wrong on 50 of them: D = 5 points. d_i is Bernoulli(0.05), so
    # the resampled D has sd 100 * sqrt(0.05 * 0.95 / 1000) = 0.689 points; the 5% quantile sits
    # near 5 - 1.645 * 0.689 = 3.87 and the two-sided 95% interval near 5 -/+ 1.96 * 0.689.
    a = np.ones(1000, bool)
    b = a.copy()
    b[np.random.default_rng(0).choice(1000, 50, replace=False)] = False
    r = paired_bootstrap_difference(a, b, n_boot=4000, seed=3)
    sd = 100 * math.sqrt(0.05 * 0.95 / 1000)
    assert r["difference"] == pytest.approx(5.0)
    assert r["lower"] == pytest.approx(5 - 1.645 * sd, abs=0.25)
    assert r["interval"][0] == pytest.approx(5 - 1.96 * sd, abs=0.3)
    assert r["interval"][1] == pytest.approx(5 + 1.96 * sd, abs=0.3)
    assert (r["a_only"], r["b_only"]) == (50, 0)


def test_pairing_cancels_what_both_models_share():
    # the same 2-point difference with few discordant images is far tighter than with many: an
    # unpaired resampling would see no difference between the two cases
    n = 2000
    few_a, few_b = np.ones(n, bool), np.ones(n, bool)
    few_b[:40] = False  # 40 images B alone misses
    many_a, many_b = np.zeros(n, bool), np.zeros(n, bool)
    many_a[:840], many_b[800:1600] = True, True  # 800 vs 760 discordant, the same 2 points
    few = paired_bootstrap_difference(few_a, few_b, n_boot=2000)
    many = paired_bootstrap_difference(many_a, many_b, n_boot=2000)
    assert few["difference"] == pytest.approx(2.0) and many["difference"] == pytest.approx(2.0)
    assert few["lower"] > many["lower"] + 0.5


def test_bound_below_mean_and_inside_the_two_sided_interval():
    rng = np.random.default_rng(7)
    a, b = rng.random(3000) < 0.8, rng.random(3000) < 0.78
    r = paired_bootstrap_difference(a, b, n_boot=1000)
    lo, hi = r["interval"]
    assert lo < r["lower"] < r["difference"] < hi


def test_deterministic_by_seed():
    rng = np.random.default_rng(2)
    a, b = rng.random(800) < 0.6, rng.random(800) < 0.6
    one = paired_bootstrap_difference(a, b, n_boot=500, seed=11)
    assert one == paired_bootstrap_difference(a, b, n_boot=500, seed=11)
    assert one["lower"] != paired_bootstrap_difference(a, b, n_boot=500, seed=12)["lower"]


@pytest.mark.parametrize(
    "a, b, kw",
    [(np.ones(3, bool), np.ones(4, bool), {}), ([], [], {}), ([1, 0], [0, 1], {"alpha": 1.0})],
)
def test_bad_input_says_what_is_wrong(a, b, kw):
    with pytest.raises(ValueError, match="need"):
        paired_bootstrap_difference(a, b, **kw)
