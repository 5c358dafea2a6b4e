"""Paired tests against scipy and hand-enumerated cases; Holm against a hand-computed example."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from rankline.evaluation.significance import compare_to_baseline, holm, paired_t_test, randomization_test


def test_t_test_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    for n in (2, 5, 43, 500):
        a, b = rng.random(n), rng.random(n) * 0.9
        ours = paired_t_test(a, b)
        ref = stats.ttest_rel(a, b)
        assert ours.statistic == pytest.approx(ref.statistic, rel=1e-12)
        assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-10)


def test_t_test_degenerate_differences() -> None:
    assert paired_t_test([0.5, 0.2, 0.1], [0.5, 0.2, 0.1]).p_value == 1.0
    shifted = paired_t_test([1.5, 1.25, 1.0], [1.0, 0.75, 0.5])
    assert shifted.p_value == 0.0 and shifted.statistic > 0


def test_exact_randomization_hand_enumerated() -> None:
    # differences 1, 2, 3: of the 8 sign patterns only (+,+,+) and (-,-,-) reach |sum| >= 6
    result = randomization_test([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert result.statistic == 2.0 and result.p_value == 2 / 8
    # differences .3 .1 .2 -.1 (mean .125): |sum| >= .5 for (+,+,+,±), (+,-,+,+) and their negations
    result = randomization_test([0.4, 0.2, 0.3, 0.0], [0.1, 0.1, 0.1, 0.1])
    assert result.p_value == 6 / 16


def test_exact_randomization_matches_scipy_permutation_test() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random(11), rng.random(11)
    ref = stats.permutation_test((a, b), lambda x, y: np.mean(x - y), permutation_type="samples",
                                 n_resamples=np.inf, alternative="two-sided")
    assert randomization_test(a, b).p_value == pytest.approx(ref.pvalue)


def test_sampled_randomization_converges_to_exact() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.random(14), rng.random(14) * 0.8
    exact = randomization_test(a, b, n_permutations=2**14).p_value
    sampled = randomization_test(a, b, n_permutations=200_000, seed=3).p_value
    assert sampled == pytest.approx(exact, abs=0.005)
    assert randomization_test(a, b, n_permutations=5000, seed=3) == randomization_test(a, b, n_permutations=5000, seed=3)
    # with many queries and a clear shift the sampled p-value is as small as the budget allows
    big = rng.random(1000)
    assert randomization_test(big + 0.2, big - rng.random(1000) * 0.01, n_permutations=999).p_value == 1 / 1000


def test_holm_hand_computed() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.01]) == pytest.approx([0.5, 0.02])
    assert holm([0.9, 0.3]) == pytest.approx([0.9, 0.6])
    assert holm([0.9, 0.8]) == [1.0, 1.0]
    assert holm([]) == []


def test_compare_to_baseline_pairs_common_queries_and_corrects_across_runs() -> None:
    rng = np.random.default_rng(4)
    qids = [f"q{i}" for i in range(40)]
    base = rng.random(40)
    per_query = {
        "base": {"AP": dict(zip(qids, base))},
        "better": {"AP": dict(zip(qids, base + 0.1 + rng.normal(0, 0.05, 40)))},
        "same": {"AP": dict(zip(qids[:30], base[:30] + rng.normal(0, 0.05, 30)))},
    }
    comps = {c.run: c for c in compare_to_baseline(per_query, "base")}
    assert comps["same"].n_queries == 30 and comps["better"].n_queries == 40
    raw = [comps[r].p_value for r in ("better", "same")]
    assert [comps[r].p_holm for r in ("better", "same")] == pytest.approx(holm(raw))
    assert comps["better"].p_value == pytest.approx(stats.ttest_rel(list(per_query["better"]["AP"].values()), base).pvalue)
    assert comps["better"].mean_difference > 0.05 and comps["better"].p_holm < 0.01
    rand = {c.run: c for c in compare_to_baseline(per_query, "base", test="randomization", n_permutations=2000)}
    assert rand["better"].p_value == 1 / 2001
    with pytest.raises(ValueError, match="unknown test"):
        compare_to_baseline(per_query, "base", test="wilcoxon")


def test_too_few_paired_queries_give_no_evidence() -> None:
    per_query = {"base": {"RR": {"q1": 0.5}}, "other": {"RR": {"q1": 1.0}}, "disjoint": {"RR": {"q2": 1.0}}}
    comps = {c.run: c for c in compare_to_baseline(per_query, "base")}
    assert comps["other"].p_value == 1.0 and comps["other"].mean_difference == 0.5
    assert comps["disjoint"].n_queries == 0 and comps["disjoint"].p_holm == 1.0
    with pytest.raises(ValueError, match="at least 2 paired"):
        paired_t_test([1.0], [0.0])
