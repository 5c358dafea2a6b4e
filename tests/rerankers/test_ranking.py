"""The one score rule, the one head cut, the sliding-window schedule (rank_llm's, as the parity fixture
README spells it out) and permutation repair, against hand-computed cases."""
from __future__ import annotations

import math

import pytest

from rankline.formats import Candidates, Hit, Query
from rankline.rerankers.ranking import SlidingWindow, complete_permutation, order_hits, rerank_head, rerank_sliding


@pytest.mark.parametrize(
    "n, window, stride, expected",
    [
        (0, 20, 10, []),
        (1, 20, 10, [(0, 1)]),
        (7, 20, 10, [(0, 7)]),
        (21, 20, 10, [(1, 21), (0, 11)]),
        (30, 20, 10, [(10, 30), (0, 20)]),
        (45, 20, 10, [(25, 45), (15, 35), (5, 25), (0, 15)]),
        (100, 20, 10, [(80 - 10 * i, 100 - 10 * i) for i in range(9)]),
        (10, 20, 10, [(0, 10)]),  # one window, shorter than `window`
    ],
)
def test_window_bounds(n, window, stride, expected):
    assert SlidingWindow(window, stride).bounds(n) == expected


def test_complete_permutation_drops_repeats_and_unknowns_and_appends_missing_in_order():
    assert complete_permutation([2, 2, 7, -1, 0], 5) == [2, 0, 1, 3, 4]
    assert complete_permutation([], 3) == [0, 1, 2]
    assert complete_permutation([1, 0], 2) == [1, 0]


def test_order_hits_is_stable_and_strictly_decreasing():
    hits = [Hit(d, 0.0, f"text {d}") for d in "abcd"]
    ranked = order_hits(hits, [0.25, 0.5, 0.25, 0.0])
    assert [h.docid for h in ranked] == ["b", "a", "c", "d"]
    assert [h.text for h in ranked] == ["text b", "text a", "text c", "text d"]
    assert ranked[1].score == 0.25 and ranked[2].score == math.nextafter(0.25, 0.0)
    assert all(x.score > y.score for x, y in zip(ranked, ranked[1:]))
    # a tie below a tie pushed down steps below the pushed score, not the raw one
    assert [h.score for h in order_hits(hits[:3], [1.0, 1.0, 1.0])] == [
        1.0, math.nextafter(1.0, 0.0), math.nextafter(math.nextafter(1.0, 0.0), 0.0)]
    with pytest.raises(ValueError, match="3 hits but 2 scores"):
        order_hits(hits[:3], [1.0, 2.0])


def test_sliding_windows_see_the_list_as_previous_windows_left_it():
    """A ranker that reverses every window: hand-computed result of two overlapping windows."""
    calls = []

    def reverse(windows):
        calls.append([[h.docid for h in w.hits] for w in windows])
        return [list(range(len(w.hits)))[::-1] for w in windows]

    hits = tuple(Hit(str(i), 0.0) for i in range(6))
    out = rerank_sliding([Candidates(Query("q", "x"), hits)], reverse, SlidingWindow(4, 2))
    # [2,6) reversed -> 0 1 5 4 3 2 ; then [0,4) reversed -> 4 5 1 0 3 2
    assert calls == [[["2", "3", "4", "5"]], [["0", "1", "5", "4"]]]
    assert [(h.docid, h.score) for h in out[0]] == [("4", 6.0), ("5", 5.0), ("1", 4.0), ("0", 3.0), ("3", 2.0),
                                                    ("2", 1.0)]


def test_windows_of_several_queries_are_ranked_together():
    sizes = []

    def identity(windows):
        sizes.append(len(windows))
        return [list(range(len(w.hits))) for w in windows]

    lists = [Candidates(Query(str(q), "x"), tuple(Hit(f"{q}-{i}", 0.0) for i in range(n)))
             for q, n in enumerate([30, 7, 45])]
    rerank_sliding(lists, identity, SlidingWindow())
    assert sizes == [3, 2, 1, 1]


class _Reverse:
    """Reverses each list it is given, scoring position i of n as 10 * (n - i); records its calls."""

    def __init__(self):
        self.calls = []

    def rerank_batch(self, lists):
        self.calls.append([(c.query.qid, [h.docid for h in c.hits]) for c in lists])
        return [order_hits(c.hits[::-1], [10.0 * (len(c.hits) - i) for i in range(len(c.hits))]) for c in lists]


def test_rerank_head_reranks_the_top_depth_and_counts_the_tail_down_below_it():
    reranker = _Reverse()
    lists = [
        Candidates(Query("a", "x"), tuple(Hit(f"a{i}", 100.0 - i) for i in range(5))),
        Candidates(Query("empty", "x"), ()),
        Candidates(Query("b", "x"), (Hit("b0", 1.0), Hit("b1", 0.5))),
    ]
    out = rerank_head(reranker, lists, depth=3)
    assert reranker.calls == [[("a", ["a0", "a1", "a2"]), ("b", ["b0", "b1"])]]  # one call; empty list skipped
    assert [(h.docid, h.score) for h in out[0]] == [("a2", 30.0), ("a1", 20.0), ("a0", 10.0), ("a3", 9.0), ("a4", 8.0)]
    assert out[1] == []
    assert [(h.docid, h.score) for h in out[2]] == [("b1", 20.0), ("b0", 10.0)]


def test_rerank_head_calls_nothing_without_hits_and_rejects_depth_zero():
    reranker = _Reverse()
    assert rerank_head(reranker, [Candidates(Query("q", "x"), ())], depth=5) == [[]]
    assert reranker.calls == []
    with pytest.raises(ValueError, match="depth must be >= 1"):
        rerank_head(reranker, [], depth=0)


@pytest.mark.parametrize("window, stride", [(10, 11), (4, 10), (1, 2)])
def test_a_stride_larger_than_the_window_is_refused(window, stride):
    """rank_llm takes such a step and silently skips the candidates between its windows (window 4, stride
    10 over 20 candidates would rerank only 0-4, 6-10, 16-20); here it is refused."""
    with pytest.raises(ValueError, match=f"stride {stride} is larger than window {window}"):
        SlidingWindow(window, stride)


@pytest.mark.parametrize("n, window, stride", [(20, 4, 4), (45, 20, 20), (7, 3, 1), (100, 20, 10)])
def test_every_candidate_enters_some_window(n, window, stride):
    covered = {i for start, end in SlidingWindow(window, stride).bounds(n) for i in range(start, end)}
    assert covered == set(range(n))


def test_listwise_stride_defaults_to_ten_or_the_window_and_every_value_is_checked_without_a_model():
    from rankline.rerankers.first import FirstOptions
    from rankline.rerankers.listwise import ListwiseOptions

    assert ListwiseOptions().stride == 10 and ListwiseOptions(window=4).stride == 4
    assert FirstOptions(window=12).stride == 10 and FirstOptions(window=8, stride=3).stride == 3
    for bad, message in [({"window": 10, "stride": 15}, "stride 15 is larger than window 10"),
                         ({"window": 27, "parity": "rank_llm"}, "window must be <= 26 with parity"),
                         ({"context_size": 0}, "context_size must be >= 1"),
                         ({"window": 2.5}, "window must be an integer"), ({"parity": "vllm"}, "parity must be one of")]:
        with pytest.raises(ValueError, match=message):
            FirstOptions(**bad)
