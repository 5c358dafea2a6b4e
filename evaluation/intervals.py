"""Confidence intervals for the mean of a per-query metric from a few human and many LLM labels.

Every function takes per-query values with the queries along axis 0; any trailing axes are
independent columns (several runs, label sets or measures at once), so one call can serve a whole
benchmark table. `y` is the metric with human labels (known on the labelled queries only), `f` the
same metric with LLM labels (known everywhere). Two estimands are kept apart on purpose:

* ``"all"``: the mean over all queries of the benchmark (the number a leaderboard reports);
* ``"unlabelled"``: the mean over the queries without human labels (ppi_py's and the paper's target).

Conventions (Oosterhuis et al., KDD 2024; Angelopoulos et al. 2023, PPI and PPI++):

* :func:`human_t` — Student t interval on the labelled queries alone (sample std, ddof=1): the
  baseline everyone uses today.
* :func:`bootstrap_basic` — the paper's empirical (basic/pivot) bootstrap on the labelled queries.
* :func:`ppi_mean` — prediction-powered inference exactly as ``ppi_py.ppi_mean_ci``: normal quantile,
  ``np.std`` with ddof=0 for both the imputed and the rectifier term, and (``lam=None``, PPI++) the
  power-tuned lambda of ``ppi_py._calc_lam_glm`` (covariance with ddof=0, variance of the predictions
  over labelled+unlabelled with ddof=1, clipped to [0, 1]). Below ``CROSSFIT_BELOW`` labelled queries
  lambda is cross-fitted instead (each fold's lambda comes from the other folds), because a lambda
  tuned on the very queries it reweights makes the interval too narrow at tiny n.
* :func:`ppi_all` — PPI for the mean over *all* queries with the finite-population correction: the
  labelled queries count with their human values and the f of every query is known, so the only
  unknown is the mean error ``y - f`` on the unlabelled queries, estimated from a simple random sample
  without replacement: ``mean(f) + mean_L(y - f) +- t_{n-1} * sqrt(1 - n/N) * s_e / sqrt(n)``
  (s_e with ddof=1). This deliberately differs from ppi_py (t quantile, ddof=1, FPC, no imputed
  variance term: the f of the benchmark's queries are not a sample).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

#: PPI++ cross-fits its lambda when fewer queries than this are labelled.
CROSSFIT_BELOW = 30
#: Folds for the cross-fitted lambda (leave-one-out when fewer labelled queries than folds).
CROSSFIT_FOLDS = 5
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class Interval:
    """A two-sided interval. Scalars for one column, arrays (the trailing shape of the inputs) for many."""

    method: str
    estimand: str  # "all" or "unlabelled"
    estimate: np.ndarray | float
    lower: np.ndarray | float
    upper: np.ndarray | float
    n_labelled: int
    n_total: int

    def column(self, index: int | tuple[int, ...]) -> "Interval":
        """The scalar interval of one column of an interval over many."""
        return replace(self, **{k: float(np.asarray(getattr(self, k))[index]) for k in ("estimate", "lower", "upper")})

    def as_dict(self) -> dict:
        """JSON-ready form (scalar intervals only)."""
        return {
            "method": self.method,
            "estimand": self.estimand,
            "estimate": float(self.estimate),
            "lower": float(self.lower),
            "upper": float(self.upper),
            "n_labelled": self.n_labelled,
            "n_total": self.n_total,
        }


def _scalar(x: np.ndarray) -> np.ndarray | float:
    return float(x) if np.ndim(x) == 0 else x


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")


def _as_float(name: str, values: np.ndarray, min_rows: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0 or values.shape[0] < min_rows:
        raise ValueError(f"{name}: need at least {min_rows} queries, got {0 if values.ndim == 0 else values.shape[0]}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name}: per-query values must be finite")
    return values


def human_t(y_lab: np.ndarray, alpha: float = 0.05, *, n_total: int | None = None, method: str = "human") -> Interval:
    """Student t interval from the labelled queries' human values (also used for LLM-only values)."""
    _check_alpha(alpha)
    y_lab = _as_float("human values", y_lab, 2)
    n = y_lab.shape[0]
    mean = y_lab.mean(axis=0)
    half = stats.t.ppf(1 - alpha / 2, n - 1) * y_lab.std(axis=0, ddof=1) / np.sqrt(n)
    return Interval(method, "all", _scalar(mean), _scalar(mean - half), _scalar(mean + half), n, n_total or n)


def bootstrap_basic(
    y_lab: np.ndarray,
    alpha: float = 0.05,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    rng: np.random.Generator | int | None = 0,
    n_total: int | None = None,
) -> Interval:
    """Empirical (basic/pivot) bootstrap as in the paper: resample the labelled queries with
    replacement, sort the deviations of the resampled means from the sample mean, and reflect the
    (alpha/2, 1-alpha/2) deviations around the mean."""
    _check_alpha(alpha)
    y_lab = _as_float("human values", y_lab, 2)
    rng = np.random.default_rng(rng)
    n = y_lab.shape[0]
    mean = y_lab.mean(axis=0)
    idx = rng.integers(0, n, size=(resamples, n))
    delta = np.sort(y_lab[idx].mean(axis=1) - mean, axis=0, kind="stable")
    upper = mean - delta[int(np.ceil(resamples * alpha / 2))]
    lower = mean - delta[min(int(np.floor(resamples * (1 - alpha / 2))), resamples - 1)]
    return Interval("bootstrap", "all", _scalar(mean), _scalar(lower), _scalar(upper), n, n_total or n)


def power_tuned_lambda(y_lab: np.ndarray, f_lab: np.ndarray, f_unl: np.ndarray) -> np.ndarray:
    """PPI++'s variance-minimising lambda per column, as ppi_py computes it for a mean, clipped to [0, 1]."""
    n, big_n = y_lab.shape[0], f_unl.shape[0]
    cov = ((y_lab - y_lab.mean(axis=0)) * (f_lab - f_lab.mean(axis=0))).mean(axis=0)
    var_f = np.concatenate([f_lab, f_unl], axis=0).var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(var_f > 0, cov / ((1 + n / big_n) * np.where(var_f > 0, var_f, 1.0)), 0.0)
    return np.clip(lam, 0.0, 1.0)


def _crossfit_lambda(y_lab: np.ndarray, f_lab: np.ndarray, f_unl: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per labelled query, the lambda tuned on the other folds (shape of y_lab)."""
    n = y_lab.shape[0]
    folds = np.array_split(rng.permutation(n), min(CROSSFIT_FOLDS, n))
    lam = np.empty_like(y_lab)
    for fold in folds:
        rest = np.setdiff1d(np.arange(n), fold)
        lam[fold] = power_tuned_lambda(y_lab[rest], f_lab[rest], f_unl)
    return lam


def _ppi_inputs(y_lab, f_lab, f_unl, *, min_unlabelled: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The human and LLM values of the labelled queries (equal shapes, >= 2 rows) and the LLM values
    of the unlabelled ones, as float arrays."""
    y_lab = _as_float("human values", y_lab, 2)
    f_lab = _as_float("LLM values of the labelled queries", f_lab, 2)
    f_unl = _as_float("LLM values of the unlabelled queries", f_unl, min_unlabelled)
    if y_lab.shape != f_lab.shape:
        raise ValueError(f"human and LLM values of the labelled queries differ in shape: {y_lab.shape} vs {f_lab.shape}")
    return y_lab, f_lab, f_unl


def ppi_mean(
    y_lab: np.ndarray,
    f_lab: np.ndarray,
    f_unl: np.ndarray,
    alpha: float = 0.05,
    *,
    lam: float | None = 1.0,
    crossfit: bool | None = None,
    rng: np.random.Generator | int | None = 0,
) -> Interval:
    """PPI (``lam=1``) or PPI++ (``lam=None``: power-tuned) interval for the mean over the unlabelled
    queries; ppi_py's ``ppi_mean_ci`` conventions (see the module docstring). ``crossfit`` (PPI++ only)
    defaults to cross-fitting below CROSSFIT_BELOW labelled queries."""
    _check_alpha(alpha)
    y_lab, f_lab, f_unl = _ppi_inputs(y_lab, f_lab, f_unl, min_unlabelled=1)
    n, big_n = y_lab.shape[0], f_unl.shape[0]
    if lam is not None:
        method = "ppi" if lam == 1.0 else f"ppi(lam={lam:g})"
        lam_q = np.full_like(y_lab, float(lam))
    else:
        method = "ppi++"
        if crossfit if crossfit is not None else n < CROSSFIT_BELOW:
            lam_q = _crossfit_lambda(y_lab, f_lab, f_unl, np.random.default_rng(rng))
        else:
            lam_q = np.broadcast_to(power_tuned_lambda(y_lab, f_lab, f_unl), y_lab.shape)
    lam_bar = lam_q.mean(axis=0)
    estimate = lam_bar * f_unl.mean(axis=0) + (y_lab - lam_q * f_lab).mean(axis=0)
    imputed = lam_bar**2 * f_unl.var(axis=0) / big_n
    rectifier = (y_lab - lam_q * f_lab).var(axis=0) / n
    half = stats.norm.ppf(1 - alpha / 2) * np.sqrt(imputed + rectifier)
    return Interval(method, "unlabelled", _scalar(estimate), _scalar(estimate - half), _scalar(estimate + half), n, n + big_n)


def ppi_all(y_lab: np.ndarray, f_lab: np.ndarray, f_unl: np.ndarray, alpha: float = 0.05) -> Interval:
    """PPI for the mean over all queries, with the finite-population correction (module docstring)."""
    _check_alpha(alpha)
    y_lab, f_lab, f_unl = _ppi_inputs(y_lab, f_lab, f_unl, min_unlabelled=0)
    n = y_lab.shape[0]
    big_n = n + f_unl.shape[0]
    errors = y_lab - f_lab
    estimate = np.concatenate([f_lab, f_unl], axis=0).mean(axis=0) + errors.mean(axis=0)
    half = stats.t.ppf(1 - alpha / 2, n - 1) * np.sqrt(1 - n / big_n) * errors.std(axis=0, ddof=1) / np.sqrt(n)
    return Interval("ppi-all", "all", _scalar(estimate), _scalar(estimate - half), _scalar(estimate + half), n, big_n)


def to_all_queries(interval: Interval, y_lab: np.ndarray) -> Interval:
    """An interval for the mean over the unlabelled queries, restated for the mean over all queries:
    the labelled queries count with their human values, so the width shrinks by m / N and the
    coverage is unchanged (the map is affine and increasing)."""
    if interval.estimand != "unlabelled":
        raise ValueError(f"{interval.method}: expected an interval for the unlabelled queries, got {interval.estimand!r}")
    y_lab = np.asarray(y_lab, dtype=np.float64)
    if y_lab.shape[0] != interval.n_labelled:
        raise ValueError(f"{interval.method}: {y_lab.shape[0]} human values for {interval.n_labelled} labelled queries")
    m, total = interval.n_total - interval.n_labelled, interval.n_total
    labelled_sum = y_lab.sum(axis=0)

    def restate(value):
        return _scalar((labelled_sum + m * np.asarray(value)) / total)

    return Interval(interval.method, "all", restate(interval.estimate), restate(interval.lower),
                    restate(interval.upper), interval.n_labelled, total)
