"""Sliding-window schedule (rank_llm's, as the parity fixture README spells it out), permutation repair, scores."""
from __future__ import annotations

import pytest

from rankline.rerankers.ranking import SlidingWindow, complete_permutation, rerank_sliding, with_rank_scores
from rankline.formats import Hit, Query


@pytest.mark.parametrize(
    "n, window, stride, depth, expected",
    [
        (0, 20, 10, 100, []),
        (1, 20, 10, 100, [(0, 1)]),
        (7, 20, 10, 100, [(0, 7)]),
        (21, 20, 10, 100, [(1, 21), (0, 11)]),
        (30, 20, 10, 100, [(10, 30), (0, 20)]),
        (45, 20, 10, 100, [(25, 45), (15, 35), (5, 25), (0, 15)]),
        (100, 20, 10, 100, [(80 - 10 * i, 100 - 10 * i) for i in range(9)]),
        (150, 20, 10, 100, [(80 - 10 * i, 100 - 10 * i) for i in range(9)]),  # positions >= depth untouched
        (40, 20, 10, 10, [(0, 10)]),  # window capped by depth
    ],
)
def test_window_bounds(n, window, stride, depth, expected):
    assert SlidingWindow(window, stride, depth).bounds(n) == expected


def test_complete_permutation_drops_repeats_and_unknowns_and_appends_missing_in_order():
    assert complete_permutation([2, 2, 7, -1, 0], 5) == [2, 0, 1, 3, 4]
    assert complete_permutation([], 3) == [0, 1, 2]
    assert complete_permutation([1, 0], 2) == [1, 0]


def test_rank_scores_strictly_decrease():
    hits = [Hit("a", 3.0), Hit("b", 3.0), Hit("c", 9.0)]
    assert [(h.docid, h.score) for h in with_rank_scores(hits)] == [("a", 3.0), ("b", 2.0), ("c", 1.0)]


def test_sliding_windows_see_the_list_as_previous_windows_left_it():
    """A ranker that reverses every window: hand-computed result of two overlapping windows."""
    calls = []

    def reverse(requests):
        calls.append([[h.docid for h in r.hits] for r in requests])
        return [list(range(len(r.hits)))[::-1] for r in requests]

    hits = [Hit(str(i), 0.0) for i in range(6)]
    out = rerank_sliding([Query("q", "x")], [hits], reverse, SlidingWindow(4, 2, 100))
    # [2,6) reversed -> 0 1 5 4 3 2 ; then [0,4) reversed -> 4 5 1 0 3 2
    assert calls == [[["2", "3", "4", "5"]], [["0", "1", "5", "4"]]]
    assert [h.docid for h in out[0]] == ["4", "5", "1", "0", "3", "2"]


def test_windows_of_several_queries_are_ranked_together():
    sizes = []

    def identity(requests):
        sizes.append(len(requests))
        return [list(range(len(r.hits))) for r in requests]

    lists = [[Hit(f"{q}-{i}", 0.0) for i in range(n)] for q, n in enumerate([30, 7, 45])]
    rerank_sliding([Query(str(q), "x") for q in range(3)], lists, identity, SlidingWindow())
    assert sizes == [3, 2, 1, 1]
