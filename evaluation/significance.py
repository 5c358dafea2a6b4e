"""Paired significance tests between runs on per-query values, with Holm's correction across runs.

The tests ranx offers for comparing runs: the two-sided paired Student t-test and Fisher's
randomisation (sign-flip permutation) test, where the per-query differences keep their size and get
random signs. When all 2^n sign patterns fit in the permutation budget the randomisation test
enumerates them and is exact; otherwise it samples, with the add-one estimate (b + 1) / (B + 1) of
Phipson and Smyth so that a sampled p-value is never 0. Comparing several runs with a baseline is a
family of tests; Holm's step-down correction controls its family-wise error rate.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = ["TESTS", "Comparison", "TestResult", "compare_to_baseline", "holm", "paired_t_test", "randomization_test"]

# relative slack when comparing a permuted statistic with the observed one (float round-off)
_TIE_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class TestResult:
    statistic: float
    p_value: float


@dataclass(frozen=True, slots=True)
class Comparison:
    """One run against the baseline on one measure, over the queries both runs have."""

    run: str
    baseline: str
    measure: str
    n_queries: int
    mean_difference: float  # run minus baseline
    statistic: float
    p_value: float
    p_holm: float  # Holm-adjusted across the runs compared with the same baseline on this measure


def _differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    a_, b_ = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a_.shape != b_.shape or a_.ndim != 1:
        raise ValueError(f"paired tests need two equally long 1-d samples, got shapes {a_.shape} and {b_.shape}")
    if len(a_) < 2:
        raise ValueError(f"paired tests need at least 2 paired queries, got {len(a_)}")
    return a_ - b_


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Two-sided paired t-test of mean(a - b) = 0 (as scipy.stats.ttest_rel).

    All differences zero gives t = 0 and p = 1 (no evidence of a difference) rather than NaN.
    """
    from scipy.stats import t as student_t

    d = _differences(a, b)
    n = len(d)
    mean, sd = d.mean(), d.std(ddof=1)
    if sd == 0.0:
        return TestResult(0.0, 1.0) if mean == 0.0 else TestResult(math.copysign(math.inf, mean), 0.0)
    statistic = mean / (sd / math.sqrt(n))
    return TestResult(float(statistic), float(2.0 * student_t.sf(abs(statistic), n - 1)))


def randomization_test(a: Sequence[float], b: Sequence[float], *, n_permutations: int = 10_000,
                       seed: int = 42) -> TestResult:
    """Two-sided Fisher randomisation test of mean(a - b) = 0; the statistic is mean(a - b).

    Exact (all 2^n sign flips, p = count / 2^n) when 2^n <= `n_permutations`; otherwise
    `n_permutations` random sign flips drawn with `seed`, p = (count + 1) / (n_permutations + 1).
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be positive, got {n_permutations}")
    d = _differences(a, b)
    n = len(d)
    observed = abs(d.mean())
    threshold = observed - _TIE_TOLERANCE * max(observed, 1.0)
    if n < 63 and 2**n <= n_permutations:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        extreme = int(np.count_nonzero(np.abs(signs @ d) / n >= threshold))
        return TestResult(float(d.mean()), extreme / len(signs))
    rng = np.random.default_rng(seed)
    extreme, chunk = 0, max(1, 2_000_000 // n)
    for start in range(0, n_permutations, chunk):
        size = min(chunk, n_permutations - start)
        signs = rng.integers(0, 2, size=(size, n), dtype=np.int8) * 2 - 1
        extreme += int(np.count_nonzero(np.abs(signs @ d) / n >= threshold))
    return TestResult(float(d.mean()), (extreme + 1) / (n_permutations + 1))


TESTS = {"t": paired_t_test, "randomization": randomization_test}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order."""
    p = np.asarray(p_values, np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


def compare_to_baseline(per_query: Mapping[str, Mapping[str, Mapping[str, float]]], baseline: str, *,
                        test: str = "t", **test_options: int) -> list[Comparison]:
    """Compare every run with `baseline` on every measure, Holm-correcting across the runs.

    `per_query` is ``{run name: {measure: {qid: value}}}`` (the output of metrics.evaluate per run);
    each comparison pairs the queries the two runs have in common (p = 1 when fewer than two).
    """
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; expected one of {sorted(TESTS)}")
    if baseline not in per_query:
        raise ValueError(f"baseline run {baseline!r} not among {sorted(per_query)}")
    comparisons: list[Comparison] = []
    for measure, base_values in per_query[baseline].items():
        family = []
        for run, results in per_query.items():
            if run == baseline:
                continue
            values = results[measure]
            qids = sorted(set(values) & set(base_values))
            a = [values[q] for q in qids]
            b = [base_values[q] for q in qids]
            # fewer than two paired queries carry no evidence of a difference: p = 1
            result = TESTS[test](a, b, **test_options) if len(qids) >= 2 else TestResult(0.0, 1.0)
            difference = float(np.mean(a) - np.mean(b)) if qids else 0.0
            family.append((run, len(qids), difference, result))
        adjusted = holm([result.p_value for *_, result in family])
        comparisons += [
            Comparison(run, baseline, measure, n, diff, result.statistic, result.p_value, p_adj)
            for (run, n, diff, result), p_adj in zip(family, adjusted)
        ]
    return comparisons
