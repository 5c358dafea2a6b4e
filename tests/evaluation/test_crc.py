"""CRC against the paper's reference formulas (re-derived here as the oracle) and hand-computed cases."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from rankline.evaluation import crc


def _paper_shift(dist: np.ndarray, degree: float) -> np.ndarray:
    """The paper's per-document bound (datasets.py `_upper/_lower_bound_per_doc`), written out."""
    grades = np.arange(dist.shape[1])
    if degree == 0:
        return dist @ grades
    flip = degree < 0
    p = dist[:, ::-1] if flip else dist
    d = abs(degree)
    cum = np.cumsum(p, axis=1)
    new = p.copy()
    new[:, 0] -= d
    new[:, 1:-1] -= np.maximum(0, d - cum[:, :-2])
    new[:, :-1] = np.maximum(0, new[:, :-1])
    new /= new.sum(axis=1, keepdims=True)
    if flip:
        new = new[:, ::-1]
    return new @ grades


def test_shift_matches_the_paper_on_positive_distributions():
    dist = np.random.default_rng(0).dirichlet(np.ones(4), size=50)
    lambdas = np.array([-1.0, -0.7, -0.2, 0.0, 0.05, 0.5, 0.99])
    ours = crc.shifted_expected_grades(dist, lambdas)
    for j, lam in enumerate(lambdas):
        np.testing.assert_allclose(ours[:, j], _paper_shift(dist, lam), atol=1e-12)


def test_shift_is_monotone_and_spans_the_grades():
    dist = np.random.default_rng(1).dirichlet(np.ones(4), size=20)
    grid = crc.shifted_expected_grades(dist)
    assert np.all(np.diff(grid, axis=1) >= -1e-12)
    np.testing.assert_allclose(grid[:, 0], 0.0, atol=1e-12)
    np.testing.assert_allclose(grid[:, -1], 3.0, atol=1e-12)


def test_shift_hand_computed_and_hard_labels_do_not_move():
    p = np.array([[0.5, 0.5, 0.0, 0.0]])
    # lambda = 0.25: grade 0 keeps 0.25 of 0.5 -> (0.25, 0.5) / 0.75 -> E = 2/3
    assert crc.shifted_expected_grades(p, np.array([0.25]))[0, 0] == pytest.approx(2 / 3)
    # lambda = 1: everything removed below the (empty) top grade: limit = highest grade in support
    assert crc.shifted_expected_grades(p, np.array([1.0]))[0, 0] == pytest.approx(1.0)
    hard = np.eye(4)[[2]]
    np.testing.assert_allclose(crc.shifted_expected_grades(hard), 2.0)


def test_dcg_grid_equals_dcg_of_the_expected_grades_in_trec_eval_order():
    run = {"q1": {"a": 3.0, "b": 2.0, "c": 2.0, "d": 1.0}}  # tie b/c: docid descending -> c before b
    dists = {"q1": {"a": np.eye(4)[3], "b": np.eye(4)[1], "c": np.array([0.0, 0.5, 0.5, 0.0])}}
    grid = crc.dcg_grid(run, dists, ["q1", "q2"], "DCG@3")
    expected = 3 / np.log2(2) + 1.5 / np.log2(3) + 1 / np.log2(4)
    assert grid[0, crc._ZERO] == pytest.approx(expected)
    assert np.all(grid[1] == 0)  # a query the run does not answer scores 0
    exp_gain = crc.dcg_grid(run, dists, ["q1"], "DCG(dcg='exp-log2')@3")
    assert exp_gain[0, crc._ZERO] == pytest.approx(7 + (2**1.5 - 1) / np.log2(3) + 1 / np.log2(4))
    with pytest.raises(ValueError, match="DCG@k only"):
        crc.dcg_grid(run, dists, ["q1"], "nDCG@10")


def test_dcg_grid_of_hard_labels_equals_the_metrics_module(data_dir):
    """On real data: one-hot distributions at lambda = 0 give exactly metrics.evaluate's DCG@10."""
    from rankline.formats import read_qrels, read_run
    from rankline.evaluation.label_dist import empirical_label_dist
    from rankline.evaluation.metrics import evaluate

    qrels = read_qrels(data_dir / "trec-dl-2019" / "qrels.dl19-passage.txt")
    run = read_run(data_dir / "trec-dl-2019" / "runs" / "ICT-BERT2")
    qids = sorted(qrels)
    grid = crc.dcg_grid(run, empirical_label_dist([qrels], pseudo_count=0.0), qids, "DCG@10")
    want = evaluate(qrels, run, ["DCG@10"], complete=True)["DCG@10"]
    np.testing.assert_allclose(grid[:, crc._ZERO], [want[q] for q in qids], atol=1e-12)


def _paper_find_bounds(true_values, bound_func, coverage=0.95, epsilon=1e-5):
    """The paper's methods.find_bounds (binary search on the degree)."""
    n = true_values.shape[0]
    coverage += coverage / n
    total = np.floor((1.0 - coverage) * n)
    k_low = np.floor(total / 2.0)
    lo_lo, lo_hi, up_lo, up_hi = -1.0, 1.0, -1.0, 1.0
    while lo_hi - lo_lo > epsilon:
        mid = lo_lo + (lo_hi - lo_lo) / 2
        if np.sum(bound_func(mid) > true_values) > k_low:
            lo_hi = mid
        else:
            lo_lo = mid
    k_up = total - np.sum(bound_func(lo_lo) > true_values)
    while up_hi - up_lo > epsilon:
        mid = up_lo + (up_hi - up_lo) / 2
        if np.sum(bound_func(mid) < true_values) <= k_up:
            up_hi = mid
        else:
            up_lo = mid
    return lo_lo, up_hi


def _synthetic(seed: int, queries: int = 60, depth: int = 5):
    rng = np.random.default_rng(seed)
    dist = rng.dirichlet(np.ones(4) * 0.7, size=(queries, depth))
    true_grades = np.array([[rng.choice(4, p=p) for p in row] for row in dist])
    disc = 1 / np.log2(np.arange(2, depth + 2))
    y = true_grades @ disc
    grid = np.einsum("qdg,d->qg", crc.shifted_expected_grades(dist), disc)
    return dist, disc, y, grid


@pytest.mark.parametrize("seed", range(3))
def test_per_query_bounds_match_the_paper_search(seed):
    dist, disc, y, grid = _synthetic(seed)
    lab, unl = np.arange(40), np.arange(40, 60)
    lower, upper = crc.crc_per_query(y[lab], grid[lab], grid[unl], 0.05)
    lam_lo, lam_hi = _paper_find_bounds(
        y[lab], lambda lam: np.stack([_paper_shift(d, lam) for d in dist[lab]]) @ disc
    )
    paper_lower = np.stack([_paper_shift(d, lam_lo) for d in dist[unl]]) @ disc
    paper_upper = np.stack([_paper_shift(d, lam_hi) for d in dist[unl]]) @ disc
    # Our grid step is 1e-3 and always rounds outward: at least as wide, and close.
    assert np.all(lower <= paper_lower + 1e-9) and np.all(upper >= paper_upper - 1e-9)
    np.testing.assert_allclose(lower, paper_lower, atol=0.02)
    np.testing.assert_allclose(upper, paper_upper, atol=0.02)
    # The calibration property itself: at most floor((1 - .95 - .95/40) * 40) = 1 labelled query outside.
    lo_lab, hi_lab = crc.crc_per_query(y[lab], grid[lab], grid[lab], 0.05)
    assert np.sum((y[lab] < lo_lab) | (y[lab] > hi_lab)) <= 1


def test_per_query_refuses_too_few_labelled_queries():
    _, _, y, grid = _synthetic(0)
    assert crc.min_labelled_per_query(0.05) == 19
    with pytest.raises(ValueError, match="at least 19"):
        crc.crc_per_query(y[:18], grid[:18], grid[18:], 0.05)
    with pytest.warns(UserWarning, match=r"guarantees 90.0% two-sided coverage, not 95%; that needs 39"):
        crc.crc_per_query(y[:19], grid[:19], grid[19:], 0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        crc.crc_per_query(y[:39], grid[:39], grid[39:], 0.05)


def test_dataset_level_covers_and_columns_are_independent():
    hits, reps = 0, 60
    dist, disc, y, grid = _synthetic(5, queries=300)
    rng = np.random.default_rng(0)
    for rep in range(reps):
        perm = rng.permutation(300)
        lab, unl = perm[:20], perm[20:]
        iv = crc.crc_dataset(y[lab], grid[lab], grid[unl], 0.05, resamples=2000, rng=rep)
        assert iv.lower <= iv.upper  # the estimate (lambda = 0) may lie outside: calibration can shift both
        hits += iv.lower <= y[unl].mean() <= iv.upper
    assert hits / reps >= 0.85  # bootstrap calibration is asymptotic: ~0.92-0.95 at n=20 on this data
    both = crc.crc_dataset(np.stack([y[:20], y[20:40]], 1), np.stack([grid[:20], grid[20:40]], 1),
                           np.stack([grid[40:], grid[40:]], 1), resamples=500, rng=1)
    one = crc.crc_dataset(y[20:40], grid[20:40], grid[40:], resamples=500, rng=1)
    assert both.upper[1] == pytest.approx(one.upper) and both.lower[1] == pytest.approx(one.lower)


def test_bootstrap_resample_size_matches_the_variance_with_a_student_t_correction():
    # n=10, m=33: 9 * 33 / 43 = 6.907 draws match s^2 (1/n + 1/m); times (1.95996 / 2.26216)^2 = 0.7507 -> 5.18
    assert crc.bootstrap_resample_size(10, 33, 0.05) == 5
    assert crc.bootstrap_resample_size(20, 23, 0.05) == 8  # 19 * 23 / 43 = 10.16, times (1.95996 / 2.09302)^2
    assert crc.bootstrap_resample_size(1000, 10**6, 0.05) == 995  # large n and m: the paper's n draws
    assert crc.bootstrap_resample_size(2, 100, 0.05) == 1


def test_paired_grid_is_monotone_and_brackets_the_difference():
    _, _, _, grid_a = _synthetic(1)
    _, _, _, grid_b = _synthetic(2)
    diff = crc.paired_grid(grid_a, grid_b)
    assert np.all(np.diff(diff, axis=-1) >= -1e-12)
    np.testing.assert_allclose(diff[:, crc._ZERO], grid_a[:, crc._ZERO] - grid_b[:, crc._ZERO])
