"""Listwise ranking losses on a batch of windows: weighted RankNet, ListNet and LambdaRank.

Every loss takes the model's scores of the window positions, ``scores [B, N]``, and the teacher's judgement:

- ``ranks [B, N]``: the 1-based rank of each window position in the teacher order (1 = best). A rank of 0
  marks a padded slot (a window shorter than the batch's widest); it takes part in nothing.
- ``grades [B, N]`` (optional): the teacher's relevance grades, higher = better. They say which pairs are
  *tied*: two positions of equal grade form no pair even though the teacher order lists one before the other.
  Grades must agree with the ranks (a better rank never has a lower grade). Without grades, two positions
  are tied only if their ranks are equal.

**The tie rule.** A tied pair contributes no term, is not counted in the denominator, and is counted in
:func:`pair_counts` (``tied``), so a trainer can log how many pairs its data leaves out instead of losing them
silently. Pairs whose *scores* tie are never dropped (rank_llm derives its targets from the model's own sorted
scores and so loses every pair whose predicted scores tie; here targets come from the teacher only).

**Reductions.** Each window's loss is a mean over its ordered (untied) pairs (ListNet: a cross-entropy per
window); the batch loss is the mean over the windows that have at least one ordered pair. A batch with no
ordered pair at all gives 0 (still attached to the graph, so ``backward()`` works and changes nothing).

The formulas, with ``softplus(x) = log(1 + e^x)`` so that ``softplus(-(s_i - s_j)) = BCEWithLogits(s_i - s_j, 1)``:

- **RankNet** (weighted, FIRST; rank_llm ``rank_net(weighted=True)``): over ordered pairs i above j,
  ``w_ij * softplus(-(s_i - s_j))`` with ``w_ij = 1 / (r_i + r_j)`` (``weighted=False``: ``w_ij = 1``), averaged over
  the ordered pairs — n(n-1)/2 of them for a strict order — and not over the sum of the weights.
- **ListNet** (top-one cross-entropy): target ``p = softmax(-r / T)`` over the window (T = ``temperature``,
  default 1; positions of equal grade share the mean of their ranks, so they get equal mass), loss
  ``-sum_i p_i log softmax(s)_i``.
- **LambdaRank** (ΔNDCG-weighted RankNet, the LambdaLoss framework's ``lambdaRank_scheme``, allRank): relevance
  ``rel_i = grades_i`` when grades are given, else ``rel_i = 1 / r_i`` (the rank-derived relevance of RankGPT-style
  distillation); gain ``G_i = (2^rel_i - 1) / IDCG`` with ``IDCG = sum_k (2^rel_(k) - 1) / log2(1 + k)`` over the ideal
  order; discount ``1 / log2(1 + pi_i)`` with ``pi_i`` the 1-based position of i when the window is sorted by the
  current scores (detached; ties in scores keep window order); over pairs with ``rel_i > rel_j``:
  ``|ΔNDCG_ij| * softplus(-sigma (s_i - s_j))`` with ``|ΔNDCG_ij| = |G_i - G_j| * |1/log2(1+pi_i) - 1/log2(1+pi_j)|``,
  averaged over those pairs, natural log. ``scheme="ndcg_loss2"`` swaps the weight for LambdaLoss's NDCG-Loss2
  ``|G_i - G_j| * |1/log2(1+d) - 1/log2(2+d)|`` with ``d = |pi_i - pi_j|`` (the default of rank_llm's ``lambdarank``,
  which reduces with log2: its value is ours / ln 2).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import torch

RANKING_LOSSES = ("ranknet", "listnet", "lambdarank")
LAMBDARANK_SCHEMES = ("delta_ndcg", "ndcg_loss2")


def teacher_ranks(order: Sequence[int], n: int | None = None) -> list[int]:
    """The 1-based rank of each window position, given the teacher order (window positions, best first).

    >>> teacher_ranks([2, 0, 1])
    [2, 3, 1]
    """
    n = len(order) if n is None else n
    if sorted(order) != list(range(n)):
        raise ValueError(f"the teacher order must be a permutation of 0..{n - 1}, got {list(order)}")
    ranks = [0] * n
    for rank, position in enumerate(order, 1):
        ranks[position] = rank
    return ranks


def _accumulation(t: "torch.Tensor") -> "torch.dtype":
    import torch

    return torch.float64 if t.dtype == torch.float64 else torch.float32


def widened(t: "torch.Tensor") -> "torch.Tensor":
    """`t` in the dtype losses are computed in: fp32 for half-precision inputs (as transformers' loss), fp64 kept
    (for gradient checks)."""
    return t.to(_accumulation(t))


def _prepare(scores: "torch.Tensor", ranks: "torch.Tensor", grades: "torch.Tensor | None"):
    """(scores, ranks, grades, valid [B, N]) in the accumulation dtype; checks shapes and consistency."""
    import torch

    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, N], got {tuple(scores.shape)}")
    dtype = _accumulation(scores)
    ranks = torch.as_tensor(ranks, device=scores.device).to(dtype)
    if ranks.shape != scores.shape:
        raise ValueError(f"ranks {tuple(ranks.shape)} must have the shape of scores {tuple(scores.shape)}")
    if (ranks < 0).any():
        raise ValueError("teacher ranks must be >= 1 (0 marks a padded slot)")
    valid = ranks > 0
    if grades is not None:
        grades = torch.as_tensor(grades, device=scores.device).to(dtype)
        if grades.shape != scores.shape:
            raise ValueError(f"grades {tuple(grades.shape)} must have the shape of scores {tuple(scores.shape)}")
        both = valid[:, :, None] & valid[:, None, :]
        contradiction = both & (ranks[:, :, None] < ranks[:, None, :]) & (grades[:, :, None] < grades[:, None, :])
        if contradiction.any():
            b, i, j = (int(x) for x in contradiction.nonzero()[0])
            raise ValueError(
                f"window {b}: position {i} is ranked above position {j} but has a lower grade "
                f"({float(grades[b, i])} < {float(grades[b, j])}); grades must agree with the teacher order"
            )
    return scores.to(dtype), ranks, grades, valid


def _ordered_pairs(ranks: "torch.Tensor", grades: "torch.Tensor | None", valid: "torch.Tensor") -> "torch.Tensor":
    """[B, N, N] bool: position i is strictly better than j in the teacher's judgement."""
    both = valid[:, :, None] & valid[:, None, :]
    above = ranks[:, :, None] < ranks[:, None, :]
    if grades is not None:
        above = above & (grades[:, :, None] > grades[:, None, :])
    return both & above


def pair_counts(
    ranks: "torch.Tensor", grades: "torch.Tensor | None" = None
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(ordered, tied) [B] long: per window, the pairs that give a RankNet/LambdaRank term and the pairs that
    the tie rule leaves out (of the n(n-1)/2 pairs of the window's n real positions)."""
    import torch

    ranks = torch.as_tensor(ranks)
    _, ranks, grades, valid = _prepare(torch.zeros(ranks.shape, dtype=torch.float32, device=ranks.device), ranks, grades)
    ordered = _ordered_pairs(ranks, grades, valid).sum(dim=(1, 2))
    n = valid.sum(dim=1)
    return ordered, n * (n - 1) // 2 - ordered


def _mean_over_windows(per_window_sum: "torch.Tensor", pairs: "torch.Tensor", scores: "torch.Tensor") -> "torch.Tensor":
    """Mean over windows with pairs of (sum / pairs); 0 attached to the graph when no window has a pair."""
    has = pairs > 0
    if not has.any():
        return scores.sum() * 0.0
    return (per_window_sum[has] / pairs[has].to(per_window_sum.dtype)).mean()


def ranknet_loss(
    scores: "torch.Tensor",
    ranks: "torch.Tensor",
    *,
    grades: "torch.Tensor | None" = None,
    weighted: bool = True,
) -> "torch.Tensor":
    """Weighted RankNet (module docstring): per window the mean over ordered pairs i above j of
    ``w_ij * BCEWithLogits(s_i - s_j, 1)``, ``w_ij = 1 / (r_i + r_j)``; mean over windows."""
    import torch.nn.functional as F

    scores, ranks, grades, valid = _prepare(scores, ranks, grades)
    ordered = _ordered_pairs(ranks, grades, valid)
    diff = scores[:, :, None] - scores[:, None, :]
    terms = F.softplus(-diff)
    if weighted:
        terms = terms / (ranks[:, :, None] + ranks[:, None, :]).clamp(min=1.0)
    per_window = (terms * ordered).sum(dim=(1, 2))
    return _mean_over_windows(per_window, ordered.sum(dim=(1, 2)), scores)


def _tie_averaged_ranks(ranks: "torch.Tensor", grades: "torch.Tensor | None", valid: "torch.Tensor") -> "torch.Tensor":
    """Each position's rank, replaced by the mean rank of the positions it is tied with (same grade)."""
    if grades is None:
        return ranks
    same = (grades[:, :, None] == grades[:, None, :]) & valid[:, None, :]
    return (same * ranks[:, None, :]).sum(-1) / same.sum(-1).clamp(min=1)


def listnet_target(
    ranks: "torch.Tensor", *, grades: "torch.Tensor | None" = None, temperature: float = 1.0
) -> "torch.Tensor":
    """The ListNet target distribution ``softmax(-r / temperature)`` over each window's real positions
    (0 on padded slots); tied positions share their mean rank."""
    import torch

    ranks = torch.as_tensor(ranks)
    _, ranks, grades, valid = _prepare(torch.zeros(ranks.shape, dtype=torch.float64), ranks, grades)
    return _listnet_target(ranks, grades, valid, temperature)


def _listnet_target(ranks, grades, valid, temperature: float) -> "torch.Tensor":
    import torch

    if temperature <= 0:
        raise ValueError(f"ListNet temperature must be > 0, got {temperature}")
    logits = (-_tie_averaged_ranks(ranks, grades, valid) / temperature).masked_fill(~valid, float("-inf"))
    return torch.softmax(logits, dim=-1).nan_to_num(0.0)


def listnet_loss(
    scores: "torch.Tensor",
    ranks: "torch.Tensor",
    *,
    grades: "torch.Tensor | None" = None,
    temperature: float = 1.0,
) -> "torch.Tensor":
    """ListNet: per window ``-sum_i p_i log softmax(s)_i`` with ``p = softmax(-r / temperature)``; mean over windows
    with at least one real position."""
    import torch

    scores, ranks, grades, valid = _prepare(scores, ranks, grades)
    target = _listnet_target(ranks, grades, valid, temperature)
    log_p = torch.log_softmax(scores.masked_fill(~valid, float("-inf")), dim=-1)
    per_window = -(target * log_p.masked_fill(~valid, 0.0)).sum(-1)
    return _mean_over_windows(per_window, valid.any(-1).long(), scores)


def lambdarank_loss(
    scores: "torch.Tensor",
    ranks: "torch.Tensor",
    *,
    grades: "torch.Tensor | None" = None,
    sigma: float = 1.0,
    scheme: str = "delta_ndcg",
) -> "torch.Tensor":
    """LambdaRank (module docstring): per window the mean over pairs with rel_i > rel_j of
    ``|ΔNDCG_ij| * softplus(-sigma (s_i - s_j))``; mean over windows."""
    import torch
    import torch.nn.functional as F

    if scheme not in LAMBDARANK_SCHEMES:
        raise ValueError(f"LambdaRank scheme must be one of {LAMBDARANK_SCHEMES}, got {scheme!r}")
    scores, ranks, grades, valid = _prepare(scores, ranks, grades)
    B, N = scores.shape
    rel = grades if grades is not None else torch.where(valid, 1.0 / ranks.clamp(min=1.0), 0.0)
    rel = rel.masked_fill(~valid, 0.0)
    gain = torch.pow(2.0, rel) - 1.0
    k = torch.arange(1, N + 1, device=scores.device, dtype=scores.dtype)
    ideal = torch.sort(gain.masked_fill(~valid, 0.0), dim=-1, descending=True).values
    idcg = (ideal / torch.log2(1.0 + k)).sum(-1, keepdim=True)
    G = gain / idcg.clamp(min=torch.finfo(scores.dtype).tiny)
    order = torch.sort(scores.detach().masked_fill(~valid, float("-inf")), dim=-1, descending=True, stable=True).indices
    position = torch.empty_like(order).scatter_(1, order, torch.arange(1, N + 1, device=scores.device).expand(B, N))
    position = position.to(scores.dtype)
    if scheme == "delta_ndcg":
        discount = 1.0 / torch.log2(1.0 + position)
        weight = (discount[:, :, None] - discount[:, None, :]).abs()
    else:
        d = (position[:, :, None] - position[:, None, :]).abs()
        weight = (1.0 / torch.log2(1.0 + d) - 1.0 / torch.log2(2.0 + d)).abs().nan_to_num(0.0, posinf=0.0)
    weight = weight * (G[:, :, None] - G[:, None, :]).abs()
    both = valid[:, :, None] & valid[:, None, :]
    pairs = both & (rel[:, :, None] > rel[:, None, :])
    terms = weight * F.softplus(-sigma * (scores[:, :, None] - scores[:, None, :]))
    per_window = (terms * pairs).sum(dim=(1, 2))
    return _mean_over_windows(per_window, pairs.sum(dim=(1, 2)), scores)


def ranking_loss(
    name: str,
    scores: "torch.Tensor",
    ranks: "torch.Tensor",
    *,
    grades: "torch.Tensor | None" = None,
    weighted: bool = True,
    temperature: float = 1.0,
    sigma: float = 1.0,
    scheme: str = "delta_ndcg",
) -> "torch.Tensor":
    """The ranking loss called `name` (one of RANKING_LOSSES) with its options."""
    if name == "ranknet":
        return ranknet_loss(scores, ranks, grades=grades, weighted=weighted)
    if name == "listnet":
        return listnet_loss(scores, ranks, grades=grades, temperature=temperature)
    if name == "lambdarank":
        return lambdarank_loss(scores, ranks, grades=grades, sigma=sigma, scheme=scheme)
    raise ValueError(f"unknown ranking loss {name!r}; expected one of {RANKING_LOSSES}")
