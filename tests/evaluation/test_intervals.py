"""Oracle tests of the interval math: ppi_py parity, hand-computed cases, known-distribution coverage."""
from __future__ import annotations

import numpy as np
import ppi_py
import pytest
from scipy import stats

from rankline.evaluation import intervals


def _data(seed: int, n: int = 40, big_n: int = 200):
    rng = np.random.default_rng(seed)
    y = rng.normal(0.5, 0.2, n)
    f_lab = y + rng.normal(0.1, 0.1, n)
    f_unl = rng.normal(0.6, 0.22, big_n)
    return y, f_lab, f_unl


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_ppi_matches_ppi_py(seed, alpha):
    y, f_lab, f_unl = _data(seed)
    ours = intervals.ppi_mean(y, f_lab, f_unl, alpha, lam=1.0)
    lo, hi = ppi_py.ppi_mean_ci(y, f_lab, f_unl, alpha=alpha, lam=1)
    assert ours.lower == pytest.approx(float(np.squeeze(lo)), abs=1e-8)
    assert ours.upper == pytest.approx(float(np.squeeze(hi)), abs=1e-8)
    point = ppi_py.ppi_mean_pointestimate(y, f_lab, f_unl, lam=1)
    assert ours.estimate == pytest.approx(float(np.squeeze(point)), abs=1e-8)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n", [10, 40])
def test_ppi_plus_plus_matches_ppi_py(seed, n):
    y, f_lab, f_unl = _data(seed, n=n)
    ours = intervals.ppi_mean(y, f_lab, f_unl, 0.05, lam=None, crossfit=False)
    lo, hi = ppi_py.ppi_mean_ci(y, f_lab, f_unl, alpha=0.05, lam=None)
    assert ours.method == "ppi++"
    assert ours.lower == pytest.approx(float(np.squeeze(lo)), abs=1e-8)
    assert ours.upper == pytest.approx(float(np.squeeze(hi)), abs=1e-8)


def test_power_tuned_lambda_is_clipped_and_zero_for_useless_predictions():
    y, f_lab, f_unl = _data(1)
    anti = intervals.power_tuned_lambda(y, -f_lab, -f_unl)
    assert anti == 0.0
    assert 0.0 < intervals.power_tuned_lambda(y, f_lab, f_unl) <= 1.0


def test_columns_are_independent():
    """Trailing axes are columns: a 2-column call equals two 1-column calls."""
    a, b = _data(2), _data(3)
    stacked = [np.stack([u, v], axis=1) for u, v in zip(a, b)]
    for fn in (
        lambda y, fl, fu: intervals.ppi_mean(y, fl, fu, lam=None, crossfit=False),
        lambda y, fl, fu: intervals.ppi_mean(y, fl, fu, lam=None, crossfit=True, rng=7),
        intervals.ppi_all,
        lambda y, fl, fu: intervals.human_t(y),
        lambda y, fl, fu: intervals.bootstrap_basic(y, rng=3),
    ):
        both = fn(*stacked)
        one, two = fn(*a), fn(*b)
        assert both.lower[0] == pytest.approx(one.lower, abs=1e-12)
        assert both.upper[1] == pytest.approx(two.upper, abs=1e-12)


def test_human_t_hand_computed():
    y = np.array([0.2, 0.4, 0.6])
    iv = intervals.human_t(y, 0.05)
    half = 4.302652729911275 * 0.2 / np.sqrt(3)  # t_{2, 0.975} * s / sqrt(n)
    assert iv.estimate == pytest.approx(0.4)
    assert (iv.lower, iv.upper) == pytest.approx((0.4 - half, 0.4 + half))


def test_ppi_all_hand_computed_and_exact_when_everything_is_labelled():
    y = np.array([1.0, 2.0, 4.0])
    f_lab = np.array([0.0, 2.0, 3.0])  # errors 1, 0, 1: mean 2/3, s = sqrt(1/3)
    f_unl = np.array([5.0])
    iv = intervals.ppi_all(y, f_lab, f_unl, 0.05)
    assert iv.estimate == pytest.approx(np.mean([0, 2, 3, 5]) + 2 / 3)
    half = stats.t.ppf(0.975, 2) * np.sqrt(1 - 3 / 4) * np.sqrt(1 / 3) / np.sqrt(3)
    assert iv.upper - iv.estimate == pytest.approx(half)
    full = intervals.ppi_all(y, f_lab, np.empty(0))
    assert full.lower == full.upper == pytest.approx(y.mean())  # no unlabelled query: no uncertainty


def test_bootstrap_matches_the_paper_recipe():
    """Basic bootstrap: reflect the sorted resample deviations around the mean (paper's methods.bootstrap)."""
    y = np.random.default_rng(5).uniform(size=12)
    iv = intervals.bootstrap_basic(y, 0.05, rng=11)
    rng = np.random.default_rng(11)
    means = y[rng.integers(0, 12, size=(10_000, 12))].mean(axis=1)
    delta = np.sort(means - y.mean())
    assert iv.upper == pytest.approx(y.mean() - delta[250])
    assert iv.lower == pytest.approx(y.mean() - delta[9750])


def test_coverage_on_a_known_population():
    """Each method covers its own estimand at about the nominal rate on a synthetic benchmark."""
    rng = np.random.default_rng(0)
    big_n, n, reps = 200, 30, 400
    y_all = rng.beta(2, 3, big_n)
    f_all = np.clip(y_all + 0.15 + rng.normal(0, 0.1, big_n), 0, 1)  # biased LLM
    hits = {"ppi": 0, "ppi-all": 0, "human": 0, "llm": 0}
    for _ in range(reps):
        lab = rng.choice(big_n, n, replace=False)
        unl = np.setdiff1d(np.arange(big_n), lab)
        truth_all, truth_unl = y_all.mean(), y_all[unl].mean()
        for name, iv, truth in (
            ("ppi", intervals.ppi_mean(y_all[lab], f_all[lab], f_all[unl]), truth_unl),
            ("ppi-all", intervals.ppi_all(y_all[lab], f_all[lab], f_all[unl]), truth_all),
            ("human", intervals.human_t(y_all[lab]), truth_all),
            ("llm", intervals.human_t(f_all), truth_all),
        ):
            hits[name] += iv.lower <= truth <= iv.upper
    assert hits["ppi"] / reps > 0.9 and hits["ppi-all"] / reps > 0.9 and hits["human"] / reps > 0.9
    assert hits["llm"] / reps < 0.1


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="alpha"):
        intervals.human_t(np.ones(3), alpha=1.5)
    with pytest.raises(ValueError, match="at least 2"):
        intervals.human_t(np.ones(1))
    with pytest.raises(ValueError, match="shape"):
        intervals.ppi_mean(np.ones(3), np.ones(4), np.ones(5))


def test_to_all_queries_hand_computed():
    iv = intervals.Interval("crc", "unlabelled", 2.0, 1.0, 4.0, n_labelled=2, n_total=5)
    out = intervals.to_all_queries(iv, np.array([3.0, 5.0]))
    assert out.estimand == "all"
    assert (out.estimate, out.lower, out.upper) == pytest.approx(((8 + 6) / 5, (8 + 3) / 5, (8 + 12) / 5))
    with pytest.raises(ValueError, match="unlabelled"):
        intervals.to_all_queries(out, np.array([3.0, 5.0]))
