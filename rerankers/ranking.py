"""What every reranker and every caller shares: the one score rule (`order_hits`), the one head cut
(`rerank_head`, the only meaning of `depth`), the sliding-window schedule, and permutations and their
repair. Scores strictly decrease with the output order, so no evaluator can reorder ties."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Sequence

from tqdm.auto import tqdm

from rankline.formats import Candidates, Hit
from rankline.rerankers.base import Reranker

# How many candidates of a query the reranker receives, by default.
DEFAULT_DEPTH = 100


def order_hits(hits: Sequence[Hit], scores: Sequence[float]) -> list[Hit]:
    """The hits by descending score, rescored with `scores`. A stable sort: exact ties keep input order
    (as the reference BlockRank code's sort does), and a tied later hit gets the next float below, so
    the scores strictly decrease."""
    if len(hits) != len(scores):
        raise ValueError(f"{len(hits)} hits but {len(scores)} scores")
    out: list[Hit] = []
    for hit, score in sorted(zip(hits, scores), key=lambda hs: -hs[1]):
        if out and score >= out[-1].score:
            score = math.nextafter(out[-1].score, -math.inf)
        out.append(dataclasses.replace(hit, score=float(score)))
    return out


def rerank_head(reranker: Reranker, lists: Sequence[Candidates], depth: int) -> list[list[Hit]]:
    """Each list with its top `depth` hits reranked by `reranker` (one `rerank_batch` call for all lists
    that have hits) and the tail below them in its order. Scores strictly decrease down each list: the
    reranker's own for the head, then the tail counting down by one from the last head score minus one."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    todo = [i for i, c in enumerate(lists) if c.hits]
    heads = reranker.rerank_batch([Candidates(lists[i].query, lists[i].hits[:depth]) for i in todo]) if todo else []
    out: list[list[Hit]] = [[] for _ in lists]
    for i, head in zip(todo, heads):
        top = head[-1].score - 1.0
        out[i] = list(head) + [dataclasses.replace(h, score=top - j) for j, h in enumerate(lists[i].hits[depth:])]
    return out


@dataclass(frozen=True)
class SlidingWindow:
    """rank_llm's sliding window: `window` passages per call, moving up by `stride`, bottom-up over the
    whole list it is given (rank_llm's depth is the list's length: `rerank_head` cuts it).

    A stride larger than the window is refused: the windows would leave gaps, and the candidates in them
    would never be reranked (rank_llm accepts such a step and silently skips them)."""

    window: int = 20
    stride: int = 10

    def __post_init__(self) -> None:
        if self.window < 1 or self.stride < 1:
            raise ValueError(f"window and stride must be >= 1, got {self.window}/{self.stride}")
        if self.stride > self.window:
            raise ValueError(f"stride {self.stride} is larger than window {self.window}: the candidates between "
                             "two windows would never be reranked; give a stride <= the window")

    def bounds(self, n: int) -> list[tuple[int, int]]:
        """The [start, end) ranges reranked for a list of n candidates, in call order (bottom-up)."""
        if n == 0:
            return []
        end = n
        start = max(end - self.window, 0)
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


# Orders a batch of windows (each a query with the window's hits in their current order): for each,
# a permutation of its positions, best first.
WindowRanker = Callable[[Sequence[Candidates]], list[list[int]]]


def rerank_sliding(
    lists: Sequence[Candidates], rank_windows: WindowRanker, schedule: SlidingWindow, *, progress: bool = False
) -> list[list[Hit]]:
    """Rerank every list with sliding windows; position i of n scores n - i. Windows of one query run in
    order (each sees the list as the previous left it); the t-th windows of all queries are ranked
    together, so a `rank_windows` that batches them fills its forward passes across queries."""
    ranked = [list(c.hits) for c in lists]
    plans = [schedule.bounds(len(hits)) for hits in ranked]
    steps = max((len(p) for p in plans), default=0)
    bar = tqdm(total=sum(len(p) for p in plans), desc="windows", unit="win", disable=not progress, leave=False)
    for t in range(steps):
        active = [q for q in range(len(ranked)) if t < len(plans[q])]
        windows = [Candidates(lists[q].query, tuple(ranked[q][slice(*plans[q][t])])) for q in active]
        for q, window, perm in zip(active, windows, rank_windows(windows)):
            if sorted(perm) != list(range(len(window.hits))):
                raise AssertionError(f"window ranker returned {perm}, not a permutation of {len(window.hits)} "
                                     "positions")
            ranked[q][slice(*plans[q][t])] = [window.hits[j] for j in perm]
        bar.update(len(active))
    bar.close()
    return [order_hits(hits, range(len(hits), 0, -1)) for hits in ranked]
