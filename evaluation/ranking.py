"""Runs joined with their judgments, in trec_eval order, as flat arrays that every measure reads.

A :class:`Ranking` holds the ranked grades of many queries at once (query-major, rank-minor);
:func:`rank_run` builds one from a run and qrels (the order is rankline.formats' ``trec_order``), and
:func:`ideal_ranking` the ranking of every judged document best first, the normaliser of nDCG.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from rankline.formats import trec_order

# {qid: {docid: grade}}; grades are usually integers (qrels) but may be fractional (LLM expectations)
Judgments = Mapping[str, Mapping[str, float]]

#: grade of a retrieved document that has no judgment (trec_eval's RELVALUE_NONPOOL)
UNJUDGED = -np.inf


@dataclass(frozen=True)
class Ranking:
    """Ranked grades of several queries as flat arrays (query-major, rank-minor).

    Query ``q`` owns positions ``offsets[q]:offsets[q+1]`` of ``grades``, the judged grade of the
    document at each rank (:data:`UNJUDGED` where it has none; any trailing axes of ``grades`` ride
    along). ``rank`` (0-based) and ``query`` give each position's rank and query index.
    """

    offsets: np.ndarray
    grades: np.ndarray
    rank: np.ndarray
    query: np.ndarray

    @classmethod
    def from_lists(cls, sizes: np.ndarray, grades: np.ndarray) -> "Ranking":
        """The ranking whose query q holds the next sizes[q] rows of `grades`."""
        offsets = np.zeros(len(sizes) + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        query = np.repeat(np.arange(len(sizes)), sizes)
        return cls(offsets, grades, np.arange(len(grades)) - offsets[:-1][query], query)

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def head(self, cutoff: int | None) -> "Ranking":
        """The top `cutoff` ranks of every query (all of them when `cutoff` is None)."""
        sizes = self.sizes
        if cutoff is None or not len(sizes) or cutoff >= sizes.max():
            return self
        return self._take(np.arange(len(sizes)), np.minimum(sizes, cutoff))

    def rows(self, queries: np.ndarray) -> "Ranking":
        """The ranking of the queries at indices `queries`, in that order."""
        return self._take(queries, self.sizes[queries])

    def _take(self, queries: np.ndarray, kept: np.ndarray) -> "Ranking":
        """The first kept[i] ranks of query queries[i], for each i, built without touching the rest."""
        query = np.repeat(np.arange(len(kept)), kept)
        starts = np.zeros(len(kept) + 1, np.int64)
        np.cumsum(kept, out=starts[1:])
        rank = np.arange(starts[-1]) - starts[:-1][query]
        return Ranking(starts, self.grades[self.offsets[:-1][queries][query] + rank], rank, query)

    def per_query_sum(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.query, weights=values, minlength=len(self.offsets) - 1)


def discount(rank: np.ndarray) -> np.ndarray:
    """DCG's discount at each 0-based rank: 1 / log2(rank + 2)."""
    return 1.0 / np.log2(rank + 2.0)


def rank_run(qrels: Judgments, run: Mapping[str, Mapping[str, float]], qids: Sequence[str]) -> Ranking:
    """Join `run` with `qrels` for `qids` (each must be in both) and sort each query in trec_eval order."""
    sizes = np.fromiter((len(run[q]) for q in qids), np.int64, len(qids))
    grades = np.empty(int(sizes.sum()), np.float64)
    start = 0
    for qid in qids:
        docs, judged = run[qid], qrels[qid]
        docids = list(docs)
        n = len(docids)
        scores = np.fromiter(docs.values(), np.float64, n).astype(np.float32)
        found = np.fromiter(map(judged.get, docids, itertools.repeat(UNJUDGED)), np.float64, n)
        grades[start:start + n] = found[trec_order(docids, scores)]
        start += n
    return Ranking.from_lists(sizes, grades)


def ideal_ranking(qrels: Judgments, qids: Sequence[str]) -> Ranking:
    """Every judged document of each query, best grade first: the ideal ranking of nDCG."""
    best_first = [np.sort(np.fromiter(qrels[q].values(), np.float64, len(qrels[q])))[::-1] for q in qids]
    sizes = np.fromiter(map(len, best_first), np.int64, len(qids))
    return Ranking.from_lists(sizes, np.concatenate(best_first) if best_first else np.zeros(0))
