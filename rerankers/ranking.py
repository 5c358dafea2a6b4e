"""What every reranker shares: the sliding-window schedule, permutations and their repair, and the
final scores (strictly decreasing with the output order, so no evaluator can reorder ties)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from tqdm.auto import tqdm

from rankline.formats import Hit, Query


@dataclass(frozen=True)
class SlidingWindow:
    """rank_llm's sliding window: `window` passages per call, moving up by `stride`, over the top `depth`."""

    window: int = 20
    stride: int = 10
    depth: int = 100

    def __post_init__(self) -> None:
        if self.window < 1 or self.stride < 1 or self.depth < 1:
            raise ValueError(f"window, stride and depth must be >= 1, got {self.window}/{self.stride}/{self.depth}")

    def bounds(self, n: int) -> list[tuple[int, int]]:
        """The [start, end) ranges reranked for a list of n candidates, in call order (bottom-up)."""
        if n == 0:
            return []
        w = min(self.window, self.depth)
        end = min(self.depth, n)
        start = max(end - w, 0)
        out = [(start, end)]
        while start > 0:
            end -= self.stride
            start = max(start - self.stride, 0)
            out.append((start, end))
        return out


def complete_permutation(ranked: Sequence[int], n: int) -> list[int]:
    """A permutation of range(n): `ranked` with repeats and out-of-range entries dropped, then the
    missing positions in their current order (rank_llm's `receive_permutation` repair)."""
    seen: set[int] = set()
    head = [i for i in ranked if 0 <= i < n and not (i in seen or seen.add(i))]
    return head + [i for i in range(n) if i not in seen]


def with_rank_scores(hits: Sequence[Hit]) -> list[Hit]:
    """The hits in the given order, rescored n, n-1, ..., 1."""
    n = len(hits)
    return [Hit(h.docid, float(n - i), h.text, h.title) for i, h in enumerate(hits)]


@dataclass(frozen=True)
class WindowRequest:
    """One window to order: the query and the window's hits in their current order."""

    query: Query
    hits: tuple[Hit, ...]


# Orders a batch of windows: for each, a permutation of its positions, best first.
WindowRanker = Callable[[Sequence[WindowRequest]], list[list[int]]]


def rerank_sliding(
    queries: Sequence[Query],
    hits_lists: Sequence[Sequence[Hit]],
    rank_windows: WindowRanker,
    schedule: SlidingWindow,
    *,
    progress: bool = False,
) -> list[list[Hit]]:
    """Rerank every query's hits with sliding windows. Windows of one query run in order (each sees
    the list as the previous left it); the t-th windows of all queries are ranked together, so a
    `rank_windows` that batches them fills its forward passes across queries."""
    if len(queries) != len(hits_lists):
        raise ValueError(f"{len(queries)} queries but {len(hits_lists)} hit lists")
    lists = [list(hits) for hits in hits_lists]
    plans = [schedule.bounds(len(hits)) for hits in lists]
    steps = max((len(p) for p in plans), default=0)
    bar = tqdm(total=sum(len(p) for p in plans), desc="windows", unit="win", disable=not progress, leave=False)
    for t in range(steps):
        active = [q for q in range(len(lists)) if t < len(plans[q])]
        requests = []
        for q in active:
            start, end = plans[q][t]
            requests.append(WindowRequest(queries[q], tuple(lists[q][start:end])))
        perms = rank_windows(requests)
        for q, request, perm in zip(active, requests, perms):
            start, end = plans[q][t]
            if sorted(perm) != list(range(end - start)):
                raise AssertionError(f"window ranker returned {perm}, not a permutation of {end - start} positions")
            lists[q][start:end] = [request.hits[j] for j in perm]
        bar.update(len(active))
    bar.close()
    return [with_rank_scores(hits) for hits in lists]
