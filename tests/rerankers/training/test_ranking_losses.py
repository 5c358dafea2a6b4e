"""The ranking losses of FIRST training against hand-computed cases, against straightforward loop
re-implementations of the reference formulas (float64), under the stated tie rule, and by gradcheck."""
from __future__ import annotations

import math
import random

import pytest
import torch

from rankline.rerankers.training.ranking_losses import (
    lambdarank_loss,
    listnet_loss,
    listnet_target,
    pair_counts,
    ranking_loss,
    ranknet_loss,
    teacher_ranks,
)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def t(rows, dtype=torch.float64):
    return torch.tensor(rows, dtype=dtype)


# ------------------------------------------------------------------------------------ by hand

# One window: scores of positions A, B, C; the teacher order is A > C > B, so ranks are (1, 3, 2).
SCORES = [2.0, 0.5, 1.0]
RANKS = [1, 3, 2]


def test_teacher_ranks_invert_the_order():
    assert teacher_ranks([0, 2, 1]) == RANKS
    assert teacher_ranks([2, 0, 1]) == [2, 3, 1]
    with pytest.raises(ValueError, match="permutation"):
        teacher_ranks([0, 0, 1])


def test_weighted_ranknet_three_items_by_hand():
    # pairs (A, C): w = 1/(1+2), s_A - s_C = 1.0; (A, B): w = 1/(1+3), 1.5; (C, B): w = 1/(2+3), 0.5
    expected = (softplus(-1.0) / 3 + softplus(-1.5) / 4 + softplus(-0.5) / 5) / 3  # mean over the 3 pairs
    assert float(ranknet_loss(t([SCORES]), torch.tensor([RANKS]))) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.0831964262792612, abs=1e-12)
    unweighted = (softplus(-1.0) + softplus(-1.5) + softplus(-0.5)) / 3
    assert float(ranknet_loss(t([SCORES]), torch.tensor([RANKS]), weighted=False)) == pytest.approx(unweighted, abs=1e-12)


def test_ranknet_is_averaged_over_pairs_not_over_the_weight_sum():
    loss = float(ranknet_loss(t([SCORES]), torch.tensor([RANKS])))
    weighted_sum = softplus(-1.0) / 3 + softplus(-1.5) / 4 + softplus(-0.5) / 5
    assert loss == pytest.approx(weighted_sum / 3)
    assert loss != pytest.approx(weighted_sum / (1 / 3 + 1 / 4 + 1 / 5))


def test_listnet_by_hand():
    # target softmax(-r): e^-1, e^-3, e^-2 for A, B, C; prediction log softmax(s)
    z = math.exp(-1) + math.exp(-3) + math.exp(-2)
    p = [math.exp(-1) / z, math.exp(-3) / z, math.exp(-2) / z]
    lse = math.log(sum(math.exp(s) for s in SCORES))
    expected = -sum(pi * (s - lse) for pi, s in zip(p, SCORES))
    assert float(listnet_loss(t([SCORES]), torch.tensor([RANKS]))) == pytest.approx(expected, abs=1e-12)
    # temperature 2: target softmax(-r / 2)
    z2 = sum(math.exp(-r / 2) for r in RANKS)
    expected2 = -sum(math.exp(-r / 2) / z2 * (s - lse) for r, s in zip(RANKS, SCORES))
    assert float(listnet_loss(t([SCORES]), torch.tensor([RANKS]), temperature=2.0)) == pytest.approx(expected2, abs=1e-12)


def test_lambdarank_by_hand():
    # scores C > A > B, teacher A > C > B: the model's positions pi = (2, 3, 1) for (A, B, C)
    scores = [1.0, 0.5, 2.0]
    rel = [1.0, 1 / 3, 1 / 2]  # 1 / teacher rank
    gain = [2 ** r - 1 for r in rel]
    idcg = gain[0] / math.log2(2) + gain[2] / math.log2(3) + gain[1] / math.log2(4)
    disc = {0: 1 / math.log2(1 + 2), 1: 1 / math.log2(1 + 3), 2: 1 / math.log2(1 + 1)}
    terms = []
    for i, j in ((0, 2), (0, 1), (2, 1)):  # rel_i > rel_j
        delta = abs(gain[i] - gain[j]) / idcg * abs(disc[i] - disc[j])
        terms.append(delta * softplus(-(scores[i] - scores[j])))
    expected = sum(terms) / 3
    assert float(lambdarank_loss(t([scores]), torch.tensor([RANKS]))) == pytest.approx(expected, abs=1e-12)
    # with grades as relevance (A: 2, B: 0, C: 1): gains 3, 0, 1
    g = [2.0, 0.0, 1.0]
    gain = [2 ** r - 1 for r in g]
    idcg = 3 / math.log2(2) + 1 / math.log2(3)
    terms = [abs(gain[i] - gain[j]) / idcg * abs(disc[i] - disc[j]) * softplus(-(scores[i] - scores[j]))
             for i, j in ((0, 2), (0, 1), (2, 1))]
    got = lambdarank_loss(t([scores]), torch.tensor([RANKS]), grades=t([g]))
    assert float(got) == pytest.approx(sum(terms) / 3, abs=1e-12)


# ------------------------------------------------------------- loop re-implementations (reference formulas)


def loop_ranknet(scores, ranks, grades=None, weighted=True):
    """rank_llm rank_net(weighted): BCEWithLogits(s_i - s_j, 1) * 1/(r_i + r_j) over i above j, mean over pairs;
    batch: mean over windows with pairs."""
    per_window = []
    for s, r, g in zip(scores, ranks, grades or [None] * len(scores)):
        total, pairs = 0.0, 0
        for i in range(len(s)):
            for j in range(len(s)):
                if r[i] == 0 or r[j] == 0 or not r[i] < r[j] or (g is not None and not g[i] > g[j]):
                    continue
                w = 1.0 / (r[i] + r[j]) if weighted else 1.0
                total += w * softplus(-(s[i] - s[j]))
                pairs += 1
        if pairs:
            per_window.append(total / pairs)
    return sum(per_window) / len(per_window)


def loop_listnet(scores, ranks, temperature=1.0):
    per_window = []
    for s, r in zip(scores, ranks):
        idx = [i for i in range(len(s)) if r[i] > 0]
        z = sum(math.exp(-r[i] / temperature) for i in idx)
        lse = math.log(sum(math.exp(s[i]) for i in idx))
        per_window.append(-sum(math.exp(-r[i] / temperature) / z * (s[i] - lse) for i in idx))
    return sum(per_window) / len(per_window)


def loop_lambdarank(scores, ranks, grades=None, sigma=1.0, scheme="delta_ndcg"):
    per_window = []
    for b, (s, r) in enumerate(zip(scores, ranks)):
        idx = [i for i in range(len(s)) if r[i] > 0]
        rel = {i: (grades[b][i] if grades else 1.0 / r[i]) for i in idx}
        gain = {i: 2 ** rel[i] - 1 for i in idx}
        ideal = sorted(gain.values(), reverse=True)
        idcg = sum(gv / math.log2(1 + k) for k, gv in enumerate(ideal, 1))
        by_score = sorted(idx, key=lambda i: (-s[i], i))
        pos = {i: k for k, i in enumerate(by_score, 1)}
        total, pairs = 0.0, 0
        for i in idx:
            for j in idx:
                if not rel[i] > rel[j]:
                    continue
                if scheme == "delta_ndcg":
                    w = abs(1 / math.log2(1 + pos[i]) - 1 / math.log2(1 + pos[j]))
                else:
                    d = abs(pos[i] - pos[j])
                    w = abs(1 / math.log2(1 + d) - 1 / math.log2(2 + d))
                w *= abs(gain[i] - gain[j]) / idcg
                total += w * softplus(-sigma * (s[i] - s[j]))
                pairs += 1
        if pairs:
            per_window.append(total / pairs)
    return sum(per_window) / len(per_window)


def random_batch(seed: int, sizes=(3, 7, 12, 20)):
    """Windows of different sizes, padded with rank 0, random scores and random teacher orders."""
    rng = random.Random(seed)
    N = max(sizes)
    scores, ranks, grades = [], [], []
    for n in sizes:
        order = list(range(n))
        rng.shuffle(order)
        r = teacher_ranks(order) + [0] * (N - n)
        scores.append([rng.gauss(0, 2) for _ in range(N)])
        ranks.append(r)
        # grades that agree with the order: best third 2, middle third 1, rest 0
        grades.append([(2 if x <= n / 3 else 1 if x <= 2 * n / 3 else 0) if x else 0 for x in r])
    return scores, ranks, grades


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_losses_equal_loop_reimplementations(seed):
    scores, ranks, grades = random_batch(seed)
    s, r, g = t(scores), torch.tensor(ranks), t(grades)
    for weighted in (True, False):
        assert float(ranknet_loss(s, r, weighted=weighted)) == pytest.approx(loop_ranknet(scores, ranks, weighted=weighted), rel=1e-12)
        assert float(ranknet_loss(s, r, grades=g, weighted=weighted)) == pytest.approx(
            loop_ranknet(scores, ranks, grades, weighted=weighted), rel=1e-12)
    for temperature in (1.0, 0.3):
        assert float(listnet_loss(s, r, temperature=temperature)) == pytest.approx(loop_listnet(scores, ranks, temperature), rel=1e-12)
    for scheme in ("delta_ndcg", "ndcg_loss2"):
        assert float(lambdarank_loss(s, r, scheme=scheme)) == pytest.approx(loop_lambdarank(scores, ranks, scheme=scheme), rel=1e-12)
        assert float(lambdarank_loss(s, r, grades=g, sigma=2.0, scheme=scheme)) == pytest.approx(
            loop_lambdarank(scores, ranks, grades, sigma=2.0, scheme=scheme), rel=1e-12)


def test_padded_slots_change_nothing():
    scores, ranks, _ = random_batch(5, sizes=(6,))
    s, r = t(scores), torch.tensor(ranks)
    wide_s = torch.cat([s, t([[9.0, -9.0]])], dim=1)
    wide_r = torch.cat([r, torch.zeros(1, 2, dtype=torch.long)], dim=1)
    for name in ("ranknet", "listnet", "lambdarank"):
        assert float(ranking_loss(name, wide_s, wide_r)) == pytest.approx(float(ranking_loss(name, s, r)), rel=1e-12)


# ------------------------------------------------------------------------------------- the tie rule


def test_grade_ties_give_no_pair_and_are_counted():
    # teacher order A > B > C > D, grades 2, 1, 1, 0: B and C tie
    ranks, grades = torch.tensor([[1, 2, 3, 4]]), t([[2, 1, 1, 0]])
    ordered, tied = pair_counts(ranks, grades)
    assert (int(ordered[0]), int(tied[0])) == (5, 1)
    scores = t([[0.1, 0.2, 0.9, -0.3]])
    assert float(ranknet_loss(scores, ranks, grades=grades)) == pytest.approx(
        loop_ranknet(scores.tolist(), ranks.tolist(), grades.tolist()), rel=1e-12)
    # moving the tied pair's scores apart changes nothing about that pair: only the other pairs see them
    without_pair = ranknet_loss(scores, ranks, grades=grades)
    manual = [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]
    s = scores[0].tolist()
    expected = sum(softplus(-(s[i] - s[j])) / (i + 1 + j + 1) for i, j in manual) / 5
    assert float(without_pair) == pytest.approx(expected, rel=1e-12)


def test_equal_ranks_are_ties_without_grades():
    ordered, tied = pair_counts(torch.tensor([[1, 2, 2, 4], [1, 2, 0, 0]]))
    assert ordered.tolist() == [5, 1] and tied.tolist() == [1, 0]


def test_strict_teacher_orders_have_every_pair():
    ordered, tied = pair_counts(torch.tensor([teacher_ranks([3, 1, 0, 2, 4])]))
    assert (int(ordered[0]), int(tied[0])) == (10, 0)


def test_tied_predicted_scores_never_drop_a_pair():
    """rank_llm builds its targets from the model's own sorted scores, so equal scores lose their pairs; here
    the targets are the teacher's, so equal scores give every pair, each at BCE(0, 1) = ln 2."""
    scores = torch.full((1, 4), 0.7, dtype=torch.float64)
    ranks = torch.tensor([[2, 1, 4, 3]])
    expected = math.log(2) * (1 / 3 + 1 / 5 + 1 / 4 + 1 / 6 + 1 / 5 + 1 / 7) / 6
    assert float(ranknet_loss(scores, ranks)) == pytest.approx(expected, rel=1e-12)


def test_grades_that_contradict_the_order_are_an_error():
    with pytest.raises(ValueError, match="lower grade"):
        ranknet_loss(t([[0.0, 1.0]]), torch.tensor([[1, 2]]), grades=t([[0, 1]]))


def test_tied_positions_share_listnet_mass():
    target = listnet_target(torch.tensor([[1, 2, 3, 0]]), grades=t([[1, 0, 0, 0]]))
    assert target[0, 1] == pytest.approx(float(target[0, 2]))
    assert float(target[0, 3]) == 0.0 and float(target.sum()) == pytest.approx(1.0)


def test_windows_without_pairs_are_left_out_of_the_mean_and_an_empty_batch_is_zero():
    scores = t([[1.0, 0.0, 0.0], [0.3, 0.0, 0.0]])
    ranks = torch.tensor([[1, 2, 3], [1, 0, 0]])  # the second window has one passage: no pair
    alone = ranknet_loss(scores[:1], ranks[:1])
    assert float(ranknet_loss(scores, ranks)) == pytest.approx(float(alone))
    leaf = scores.clone().requires_grad_(True)
    zero = ranknet_loss(leaf[1:], ranks[1:])
    zero.backward()
    assert float(zero.detach()) == 0.0 and leaf.grad is not None and float(leaf.grad.abs().sum()) == 0.0


# ------------------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("name", ["ranknet", "listnet", "lambdarank"])
def test_gradcheck_float64(name):
    scores, ranks, grades = random_batch(11, sizes=(4, 6))
    s = t(scores).requires_grad_(True)
    r, g = torch.tensor(ranks), t(grades)
    assert torch.autograd.gradcheck(lambda x: ranking_loss(name, x, r), (s,))
    assert torch.autograd.gradcheck(lambda x: ranking_loss(name, x, r, grades=g), (s,))


def test_unknown_loss_and_scheme_are_errors():
    with pytest.raises(ValueError, match="unknown ranking loss"):
        ranking_loss("listmle", t([[0.0]]), torch.tensor([[1]]))
    with pytest.raises(ValueError, match="scheme"):
        lambdarank_loss(t([[0.0]]), torch.tensor([[1]]), scheme="ndcg_loss3")
