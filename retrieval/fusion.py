"""Fusion of two or more rankings: reciprocal rank fusion and min-max normalised interpolation.

Each function fuses the rankings of one query, given as ``{docid: score}``; :func:`fuse_runs` applies
one of them to whole runs (``{qid: {docid: score}}``, e.g. read with rankline.formats).
Ranks follow trec_eval's order (score descending, ties by docid descending).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from rankline.formats import ranked

Ranking = Mapping[str, float]
FUSIONS = ("rrf", "interpolate")


def rrf(rankings: Sequence[Ranking], k: int = 60, fusion_depth: int | None = None) -> dict[str, float]:
    """Reciprocal rank fusion (Cormack et al., SIGIR 2009): sum over rankings of 1 / (k + rank), rank
    counted from 1 over each ranking's top `fusion_depth` (all when None); a document absent from a ranking
    gets nothing from it."""
    if k < 0:
        raise ValueError(f"RRF k must be >= 0, got {k}")
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, (docid, _) in enumerate(ranked(ranking)[:fusion_depth], 1):
            fused[docid] = fused.get(docid, 0.0) + 1.0 / (k + rank)
    return fused


def min_max(ranking: Ranking) -> dict[str, float]:
    """Scores mapped linearly onto [0, 1] (1 for every document when all scores are equal)."""
    if not ranking:
        return {}
    lo, hi = min(ranking.values()), max(ranking.values())
    return {d: (s - lo) / (hi - lo) if hi > lo else 1.0 for d, s in ranking.items()}


def interpolate(rankings: Sequence[Ranking], weights: Sequence[float] | None = None, fusion_depth: int | None = None) -> dict[str, float]:
    """Weighted sum of min-max normalised scores (equal weights by default); a document absent from a
    ranking counts as that ranking's minimum (0 after normalisation). For two rankings, weights
    (alpha, 1 - alpha) give pyserini's ``alpha * first + (1 - alpha) * second`` on normalised scores."""
    weights = [1.0 / len(rankings)] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} fusion weights for {len(rankings)} rankings")
    fused: dict[str, float] = {}
    for ranking, w in zip(rankings, weights):
        top = dict(ranked(ranking)[:fusion_depth]) if fusion_depth is not None else ranking
        for docid, score in min_max(top).items():
            fused[docid] = fused.get(docid, 0.0) + w * score
    return fused


def fuse(rankings: Sequence[Ranking], method: str = "rrf", *, rrf_k: int = 60, weights: Sequence[float] | None = None,
         fusion_depth: int | None = None) -> dict[str, float]:
    if len(rankings) < 2:
        raise ValueError(f"fusion needs two or more rankings, got {len(rankings)}")
    if method == "rrf":
        return rrf(rankings, rrf_k, fusion_depth)
    if method == "interpolate":
        return interpolate(rankings, weights, fusion_depth)
    raise ValueError(f"unknown fusion {method!r}: expected one of {', '.join(FUSIONS)}")


def fuse_runs(runs: Sequence[Mapping[str, Ranking]], method: str = "rrf", *, rrf_k: int = 60,
              weights: Sequence[float] | None = None, fusion_depth: int | None = None, k: int | None = None) -> dict[str, dict[str, float]]:
    """Fuse whole runs query by query (a query missing from a run fuses the others); keep the top `k`."""
    qids = list(dict.fromkeys(q for run in runs for q in run))
    out: dict[str, dict[str, float]] = {}
    for qid in qids:
        fused = fuse([run.get(qid, {}) for run in runs], method, rrf_k=rrf_k, weights=weights, fusion_depth=fusion_depth)
        out[qid] = dict(ranked(fused)[:k])
    return out
