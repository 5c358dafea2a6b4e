"""Ranking metrics that equal trec_eval's, computed for all queries at once with NumPy.

The measures themselves are the families of rankline.evaluation.measures (``nDCG@10``,
``nDCG(dcg='exp-log2')@10``, ``DCG@10``, ``RR(rel=2)@10``, ``R@100``, ``P@10``, ``AP``, ``AP@100``,
``Judged@10``). Binary measures (RR, R, P, AP) count a document as relevant when its grade is at least
``rel`` (default 1; TREC DL uses ``rel=2``); nDCG and DCG use the grades as gains. Grades may be
fractional (e.g. expected labels from an LLM judge): thresholds and gains apply as is.

Semantics are trec_eval's (``form_res_rels.c`` and the ``m_*.c`` measures):
- a query's documents are ordered by score descending, ties broken by docid descending (byte order);
  scores are compared in single precision, as trec_eval stores them (C ``float``), so scores that
  differ only beyond float32 precision tie; the rank column of a run file plays no part;
- only queries present in both the qrels and the run are scored; with ``complete=True`` the qrels
  queries missing from the run score 0 (``trec_eval -c``); run queries without judgments are ignored;
- unjudged documents are non-relevant; the ideal ranking of nDCG is built from every judged document
  of the query, retrieved or not; the discount at rank r is 1 / log2(r + 1);
- RR is 1/rank of the first relevant document (0 if none within the cutoff); AP and AP@k divide by
  the number of relevant documents in the qrels (so AP@k is trec_eval's ``map_cut_k``); R@k divides by
  the same number (0 when it is 0); P@k always divides by k;
- Judged@k is the share of the top min(k, retrieved) documents that have a judgment (ir_measures).

The run is joined with the qrels and sorted once (rankline.evaluation.ranking); every measure is then
a few vectorised passes over flat arrays (over the top k ranks only for a cutoff k), so many measures
cost little more than one.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np

from rankline.evaluation.measures import Measure, parse_measure
from rankline.evaluation.ranking import Judgments, ideal_ranking, rank_run

__all__ = ["Evaluator", "evaluate", "mean", "mean_scores"]


class Evaluator:
    """Scores runs against one set of qrels; reuse it to score many runs (the qrels are indexed once).

    >>> ev = Evaluator({"q1": {"d1": 2, "d2": 0}}, ["nDCG@10", "RR(rel=2)"])
    >>> ev.evaluate({"q1": {"d2": 3.0, "d1": 1.0}})["RR(rel=2)"]
    {'q1': 0.5}
    """

    def __init__(self, qrels: Judgments, measures: Iterable[str | Measure], *, complete: bool = False):
        self.measures = [parse_measure(m) for m in measures]
        if not self.measures:
            raise ValueError("no measures given")
        self.qrels = qrels
        self.complete = complete
        self._qids = sorted(q for q, docs in qrels.items() if docs)
        self._ideal = ideal_ranking(qrels, self._qids)

    def evaluate(self, run: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
        """``{str(measure): {qid: value}}`` for the queries trec_eval would score (see module doc)."""
        present = [i for i, q in enumerate(self._qids) if run.get(q)]
        qids = [self._qids[i] for i in present]
        ranking = rank_run(self.qrels, run, qids)
        ideal = self._ideal.rows(np.asarray(present, np.int64))
        results: dict[str, dict[str, float]] = {}
        for measure in self.measures:
            per_query = dict(zip(qids, measure.values(ranking, ideal).tolist()))
            if self.complete:
                per_query = {q: per_query.get(q, 0.0) for q in self._qids}
            results[str(measure)] = per_query
        return results


def evaluate(qrels: Judgments, run: Mapping[str, Mapping[str, float]],
             measures: Iterable[str | Measure], *, complete: bool = False) -> dict[str, dict[str, float]]:
    """Per-query values ``{measure name: {qid: value}}`` of one run; see :class:`Evaluator`."""
    return Evaluator(qrels, measures, complete=complete).evaluate(run)


def mean(per_query: Mapping[str, float]) -> float:
    """Mean over queries (trec_eval's ``all`` line); NaN when no query was scored."""
    return math.fsum(per_query.values()) / len(per_query) if per_query else math.nan


def mean_scores(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{measure: mean}`` for the output of :func:`evaluate`."""
    return {name: mean(values) for name, values in results.items()}
