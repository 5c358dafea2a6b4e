"""Conformal risk control (CRC) bounds on DCG from per-document label distributions (Oosterhuis et
al., KDD 2024, section 4).

One degree lambda in [-1, 1] shifts every document's label distribution: for lambda > 0, mass
lambda is removed from the lowest grades upwards (the top grade is never reduced) and the rest is
renormalised, which can only raise the expected grade; lambda < 0 removes |lambda| from the highest
grades downwards. DCG@k of the expected grades is then monotone in lambda, so the lower and upper
degrees can be calibrated on the labelled queries so that a 1 - alpha share of the true values is
enclosed (the paper's ``find_bounds``, including its finite-sample correction
``coverage + coverage / n``).

Lambda lives on a fixed grid (``LAMBDAS``, step 0.001): every quantity is computed exactly at the grid
points and calibration picks the most conservative grid point, which keeps the CRC guarantee (the
paper's bisection to 1e-5 is the same search on a finer grid). Arrays follow the intervals module:
queries on axis 0, optional column axes, the lambda grid last.

* :func:`crc_per_query` bounds each unlabelled query's DCG (needs n >= coverage / (1 - coverage)
  labelled queries, e.g. 19 at 95%; fewer is refused).
* :func:`crc_dataset` bounds the mean DCG over the unlabelled queries by calibrating on bootstrap
  means of the labelled queries (the paper's ``crc_bootstrap``).
* :func:`paired_grid` turns two runs' grids into a monotone grid of their per-query difference:
  ``DCG_a(lambda) - DCG_b(-lambda)``.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import stats

from rankline.evaluation.intervals import BOOTSTRAP_RESAMPLES, Interval, _check_alpha, _scalar
from rankline.evaluation.measures import DCG, Measure, parse_measure
from rankline.evaluation.ranking import Ranking, discount
from rankline.formats import ranked

LAMBDAS = np.linspace(-1.0, 1.0, 2001)
_ZERO = len(LAMBDAS) // 2  # index of lambda = 0


def _raise_expectation(dist: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """Expected grade after removing mass `degrees` (>= 0) from the lowest grades upwards."""
    grades = np.arange(dist.shape[-1], dtype=np.float64)
    below = np.cumsum(dist, axis=-1) - dist  # mass strictly below each grade
    removed = np.clip(degrees[..., None] - below[..., None, :], 0.0, None)  # (..., G, L)
    removed[..., -1] = 0.0  # the top grade keeps its mass
    left = np.clip(dist[..., None, :] - removed, 0.0, None)
    total = left.sum(axis=-1)
    # All mass gone (only at degree 1 with an empty top grade): the limit is the highest grade in support.
    support_top = np.max(np.where(dist > 0, grades, 0.0), axis=-1)[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (left * grades).sum(axis=-1) / total
    return np.where(total > 1e-12, mean, support_top)


def shifted_expected_grades(dist: np.ndarray, lambdas: np.ndarray = LAMBDAS) -> np.ndarray:
    """Expected grade of each distribution (..., L) shifted by each lambda: shape (..., G)."""
    dist = np.asarray(dist, dtype=np.float64)
    lambdas = np.asarray(lambdas, dtype=np.float64)
    top = dist.shape[-1] - 1
    up = _raise_expectation(dist, np.clip(lambdas, 0.0, None))
    down = top - _raise_expectation(dist[..., ::-1], np.clip(-lambdas, 0.0, None))
    return np.where(lambdas >= 0, up, down)


def dcg_measure(measure: str | Measure) -> DCG:
    """`measure` parsed, if it is one CRC can bound: DCG@k (any gain)."""
    measure = parse_measure(measure)
    if not isinstance(measure, DCG) or measure.cutoff is None:
        raise ValueError(
            f"CRC bounds DCG@k only (monotone in the labels with a known normaliser), got {measure}; use e.g. DCG@10"
        )
    return measure


def dcg_grid(
    run: Mapping[str, Mapping[str, float]],
    dists: Mapping[str, Mapping[str, np.ndarray]],
    qids: Sequence[str],
    measure: str | Measure,
    lambdas: np.ndarray = LAMBDAS,
) -> np.ndarray:
    """Per-query DCG@k (``DCG@k`` or ``DCG(dcg='exp-log2')@k`` as rankline.evaluation.measures defines
    it: trec_eval's ranking, discount 1/log2(rank+1)) of the shifted expected grades, shape
    (len(qids), G). The exp-log2 gain is applied to the expected grade, as in the paper. A ranked
    document without a distribution counts as grade 0 with certainty (trec_eval's unjudged), and a
    query the run does not answer scores 0."""
    measure = dcg_measure(measure)
    grades = next((len(p) for docs in dists.values() for p in docs.values()), None)
    if grades is None:
        raise ValueError("no label distributions given")
    answered = [q for q in qids if run.get(q)]
    point_zero = np.eye(grades)[0]
    tops = [[dists.get(qid, {}).get(docid, point_zero) for docid, _ in ranked(run[qid])[: measure.cutoff]]
            for qid in answered]
    grid = np.zeros((len(qids), len(lambdas)))
    if answered:
        top = Ranking.from_lists(np.array([len(t) for t in tops]), np.stack([p for t in tops for p in t]))
        unique, inverse = np.unique(top.grades, axis=0, return_inverse=True)  # hard labels repeat a lot
        expected = shifted_expected_grades(unique, lambdas)[inverse.reshape(-1)]
        gains = np.exp2(expected) - 1.0 if measure.dcg == "exp-log2" else expected
        row_of = {q: i for i, q in enumerate(qids)}
        query_row = np.array([row_of[q] for q in answered])[top.query]
        np.add.at(grid, query_row, gains * discount(top.rank)[:, None])
    return grid


def paired_grid(grid_a: np.ndarray, grid_b: np.ndarray) -> np.ndarray:
    """Monotone grid of the per-query difference a - b: a shifted by lambda, b by -lambda."""
    return grid_a - grid_b[..., ::-1]


def _first_index(predicate: Callable[[np.ndarray], np.ndarray], shape: tuple, size: int) -> np.ndarray:
    """Per column, the first grid index whose predicate holds (size if none), for a predicate that is
    False then True along the grid; vectorised bisection."""
    lo = np.zeros(shape, dtype=np.int64)
    hi = np.full(shape, size, dtype=np.int64)
    while np.any(lo < hi):
        mid = np.minimum((lo + hi) // 2, size - 1)
        holds = predicate(mid)
        active = lo < hi
        hi = np.where(active & holds, mid, hi)
        lo = np.where(active & ~holds, mid + 1, lo)
    return lo


def _calibrate(
    truth: np.ndarray, predicted_at: Callable[[np.ndarray], np.ndarray], coverage: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper grid indices (per column) that enclose `coverage` of the `truth` samples (axis 0),
    as the paper's find_bounds: the excluded samples are split evenly, leftovers go to the upper side."""
    samples = truth.shape[0]
    corrected = coverage + coverage / samples
    exclude_total = math.floor((1.0 - corrected) * samples)
    exclude_low = exclude_total // 2
    columns = truth.shape[1:]

    def excluded_by_lower(g: np.ndarray) -> np.ndarray:
        return (predicted_at(g) > truth).sum(axis=0)

    def excluded_by_upper(g: np.ndarray) -> np.ndarray:
        return (predicted_at(g) < truth).sum(axis=0)

    low = np.maximum(_first_index(lambda g: excluded_by_lower(g) > exclude_low, columns, size) - 1, 0)
    exclude_up = exclude_total - excluded_by_lower(low)
    high = np.minimum(_first_index(lambda g: excluded_by_upper(g) <= exclude_up, columns, size), size - 1)
    return low, high


def _at(grid: np.ndarray, g: np.ndarray) -> np.ndarray:
    """grid (q, *C, G) at one grid index per column g (*C) -> (q, *C)."""
    return np.take_along_axis(grid, np.broadcast_to(g, grid.shape[1:-1])[None, ..., None], axis=-1)[..., 0]


def min_labelled_per_query(alpha: float) -> int:
    """Fewest labelled queries for which per-query CRC can reach coverage 1 - alpha."""
    coverage = 1.0 - alpha
    return math.ceil(coverage / (1.0 - coverage) - 1e-9)


def crc_per_query(
    y_lab: np.ndarray, grid_lab: np.ndarray, grid_unl: np.ndarray, alpha: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Per-query lower and upper DCG bounds for the unlabelled queries (shape of grid_unl minus the grid)."""
    _check_alpha(alpha)
    y_lab = np.asarray(y_lab, dtype=np.float64)
    n = y_lab.shape[0]
    needed = min_labelled_per_query(alpha)
    if n < needed:
        raise ValueError(f"per-query CRC at {1 - alpha:.0%} coverage needs at least {needed} labelled queries, got {n}")
    if n < math.ceil(2 / alpha - 1 - 1e-9):
        # Each bound alone misses at most 1/(n+1) of the queries, so both together at most 2/(n+1).
        warnings.warn(f"per-query CRC with {n} labelled queries guarantees {1 - 2 / (n + 1):.1%} two-sided coverage, "
                      f"not {1 - alpha:.0%}; that needs {math.ceil(2 / alpha - 1 - 1e-9)} labelled queries", stacklevel=2)
    low, high = _calibrate(y_lab, lambda g: _at(grid_lab, g), 1.0 - alpha, grid_lab.shape[-1])
    return _at(grid_unl, low), _at(grid_unl, high)


def bootstrap_resample_size(n: int, m: int, alpha: float) -> int:
    """Labelled queries per bootstrap mean in dataset-level CRC, for n labelled and m unlabelled ones.

    What decides coverage is the unlabelled queries' mean error minus the labelled ones' (variance
    s^2 (1/n + 1/m), s^2 the unbiased variance of one query's error). A bootstrap mean of r draws has
    the ddof=0 variance over r, so r = (n - 1) m / (n + m) matches that variance (m-out-of-n bootstrap;
    r tends to n as m grows). Its quantiles are still normal ones while the error's spread is itself
    estimated from n queries, which under-covers at small n (about 0.92 instead of 0.95 at n = 10 on
    TREC DL 2019), so r is further scaled by (z / t_{n-1})^2 at the interval's two-sided level: the
    Student-t correction the t interval makes, which vanishes as n grows."""
    z = stats.norm.ppf(1 - alpha / 2)
    t = stats.t.ppf(1 - alpha / 2, n - 1)
    return max(1, math.floor((n - 1) * m / (n + m) * (z / t) ** 2))


def crc_dataset(
    y_lab: np.ndarray,
    grid_lab: np.ndarray,
    grid_unl: np.ndarray,
    alpha: float = 0.05,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    resample_size: int | None = None,
    rng: np.random.Generator | int | None = 0,
) -> Interval:
    """Interval for the mean DCG over the m unlabelled queries: the degrees are calibrated so that
    bootstrap means of the labelled queries' bound enclose 1 - alpha of their true bootstrap means.

    Each bootstrap mean averages `resample_size` labelled queries drawn with replacement. The paper
    draws n (all labelled queries), which fits a target set much larger than the labelled one; the
    default here is :func:`bootstrap_resample_size`, which matches the bootstrap spread to the
    spread of the quantity that decides coverage, with a small-sample correction.
    The estimate is the unshifted (lambda = 0) LLM value, which the calibrated interval need not contain."""
    _check_alpha(alpha)
    y_lab = np.asarray(y_lab, dtype=np.float64)
    n, m = y_lab.shape[0], grid_unl.shape[0]
    if n < 2 or m < 1:
        raise ValueError(f"dataset-level CRC needs >= 2 labelled and >= 1 unlabelled queries, got {n} and {m}")
    if resamples < min_labelled_per_query(alpha):
        raise ValueError(f"dataset-level CRC at {1 - alpha:.0%} needs at least {min_labelled_per_query(alpha)} resamples")
    size = resample_size if resample_size is not None else bootstrap_resample_size(n, m, alpha)
    rows = np.random.default_rng(rng).integers(0, n, size=(resamples, size))
    columns = y_lab.shape[1:]

    def boot_means(values: np.ndarray) -> np.ndarray:
        return values[rows].mean(axis=1)  # (resamples, *columns)

    low, high = _calibrate(boot_means(y_lab), lambda g: boot_means(_at(grid_lab, g)), 1.0 - alpha, grid_lab.shape[-1])
    mean = lambda g: _at(grid_unl, g).mean(axis=0)  # noqa: E731
    zero = np.full(columns, _ZERO)
    return Interval("crc", "unlabelled", _scalar(mean(zero)), _scalar(mean(low)), _scalar(mean(high)), n, n + m)
