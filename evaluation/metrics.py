"""Ranking metrics that equal trec_eval's, computed for all queries at once with NumPy.

Names follow ir_measures: ``nDCG@10``, ``nDCG(dcg='exp-log2')@10`` (Burges gain 2^g - 1),
``DCG@10`` (unnormalised, same gains), ``RR``, ``RR(rel=2)@10``, ``R@100``, ``P@10``, ``AP``,
``AP@100``, ``Judged@10``. Binary measures (RR, R, P, AP) count a document as relevant when its grade
is at least ``rel`` (default 1; TREC DL uses ``rel=2``); nDCG and DCG use the grades as gains.
Grades may be fractional (e.g. expected labels from an LLM judge): thresholds and gains apply as is.

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

The run is joined with the qrels and sorted once (:func:`rank_run` gives a :class:`Ranking`); every
measure is then a few vectorised passes over flat arrays (over the top k ranks only for a cutoff k),
so many measures cost little more than one.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from rankline.formats import trec_order

__all__ = [
    "Evaluator",
    "Measure",
    "Ranking",
    "evaluate",
    "mean",
    "mean_scores",
    "parse_measure",
    "rank_run",
]

# {qid: {docid: grade}}; grades are usually integers (qrels) but may be fractional (LLM expectations)
Judgments = Mapping[str, Mapping[str, float]]

# grade given to retrieved documents that have no judgment (trec_eval's RELVALUE_NONPOOL)
UNJUDGED = -np.inf

# name -> (parameters it accepts, whether a cutoff is required)
_MEASURES: dict[str, tuple[frozenset[str], bool]] = {
    "nDCG": (frozenset({"dcg"}), False),
    "DCG": (frozenset({"dcg"}), False),
    "RR": (frozenset({"rel"}), False),
    "R": (frozenset({"rel"}), True),
    "P": (frozenset({"rel"}), True),
    "AP": (frozenset({"rel"}), False),
    "Judged": (frozenset(), False),
}
_ALIASES = {"NDCG": "nDCG", "MRR": "RR", "MAP": "AP", "Recall": "R", "Precision": "P"}
_DCG_KINDS = ("log2", "exp-log2")
_NAME_RE = re.compile(r"^\s*([A-Za-z]+)\s*(?:\((.*)\))?\s*(?:@\s*(\d+))?\s*$")


@dataclass(frozen=True, slots=True)
class Measure:
    """One measure: its kind, cutoff k (None = whole ranking), relevance threshold and DCG gain."""

    name: str
    cutoff: int | None = None
    rel: int = 1
    dcg: str = "log2"

    def __post_init__(self) -> None:
        if self.name not in _MEASURES:
            raise ValueError(f"unknown measure {self.name!r}; known: {', '.join(_MEASURES)}")
        params, cutoff_required = _MEASURES[self.name]
        if self.cutoff is not None and self.cutoff < 1:
            raise ValueError(f"{self.name}: the cutoff must be a positive integer, got {self.cutoff}")
        if cutoff_required and self.cutoff is None:
            raise ValueError(f"{self.name} needs a cutoff, e.g. {self.name}@10")
        if self.rel != 1 and "rel" not in params:
            raise ValueError(f"{self.name} takes no 'rel' parameter (it uses graded gains)")
        if self.dcg not in _DCG_KINDS:
            raise ValueError(f"{self.name}: dcg must be one of {_DCG_KINDS}, got {self.dcg!r}")
        if self.dcg != "log2" and "dcg" not in params:
            raise ValueError(f"{self.name} takes no 'dcg' parameter")

    def __str__(self) -> str:
        params = []
        if self.rel != 1:
            params.append(f"rel={self.rel}")
        if self.dcg != "log2":
            params.append(f"dcg={self.dcg!r}")
        text = self.name + (f"({','.join(params)})" if params else "")
        return text + (f"@{self.cutoff}" if self.cutoff is not None else "")


def parse_measure(name: str | Measure) -> Measure:
    """Parse an ir_measures-style name such as ``RR(rel=2)@10`` or ``nDCG(dcg='exp-log2')@10``."""
    if isinstance(name, Measure):
        return name
    match = _NAME_RE.match(name)
    if not match:
        raise ValueError(f"cannot parse measure {name!r}; expected e.g. nDCG@10, RR(rel=2)@10, AP")
    kind, params_text, cutoff = match.groups()
    kind = _ALIASES.get(kind, kind)
    if kind not in _MEASURES:
        raise ValueError(f"unknown measure {name!r}; known: {', '.join(_MEASURES)} (e.g. nDCG@10, RR(rel=2)@10)")
    kwargs: dict[str, object] = {}
    for item in filter(None, (p.strip() for p in (params_text or "").split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        value = value.strip("'\"")
        if not sep or key not in ("rel", "dcg") or key in kwargs:
            raise ValueError(f"measure {name!r}: bad parameter {item!r}; expected rel=N or dcg='exp-log2'")
        if key == "rel":
            try:
                kwargs[key] = int(value)
            except ValueError:
                raise ValueError(f"measure {name!r}: rel must be an integer, got {value!r}") from None
        else:
            kwargs[key] = value
    try:
        return Measure(kind, int(cutoff) if cutoff else None, **kwargs)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"measure {name!r}: {exc}") from None


# ------------------------------------------------------------------------------------------ ranking


@dataclass(frozen=True)
class Ranking:
    """Ranked grades of several queries as flat arrays (query-major, rank-minor).

    Query ``q`` owns positions ``offsets[q]:offsets[q+1]`` of ``grades``, the judged grade of the
    document at each rank (:data:`UNJUDGED` where it has none). ``rank`` (0-based) and ``query``
    give each position's rank and query index.
    """

    offsets: np.ndarray
    grades: np.ndarray
    rank: np.ndarray
    query: np.ndarray

    @classmethod
    def from_lists(cls, sizes: np.ndarray, grades: np.ndarray) -> "Ranking":
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
        kept = np.minimum(sizes, cutoff)
        # positions offsets[q] + 0..kept[q]-1, built without touching the rest of the ranking
        query = np.repeat(np.arange(len(kept)), kept)
        starts = np.zeros(len(kept) + 1, np.int64)
        np.cumsum(kept, out=starts[1:])
        rank = np.arange(starts[-1]) - starts[:-1][query]
        return Ranking(starts, self.grades[self.offsets[:-1][query] + rank], rank, query)

    def per_query_sum(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.query, weights=values, minlength=len(self.offsets) - 1)


def rank_run(qrels: Judgments, run: Mapping[str, Mapping[str, float]],
             qids: Sequence[str]) -> Ranking:
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


def _ideal_ranking(qrels: Judgments, qids: Sequence[str]) -> Ranking:
    """Every judged document of each query, best grade first: the ideal ranking of nDCG."""
    best_first = [np.sort(np.fromiter(qrels[q].values(), np.float64, len(qrels[q])))[::-1] for q in qids]
    sizes = np.fromiter(map(len, best_first), np.int64, len(qids))
    return Ranking.from_lists(sizes, np.concatenate(best_first) if best_first else np.zeros(0))


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = numerator.astype(np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


class Evaluator:
    """Scores runs against one set of qrels; reuse it to score many runs (the qrels are indexed once).

    >>> ev = Evaluator({"q1": {"d1": 2, "d2": 0}}, ["nDCG@10", "RR(rel=2)"])
    >>> ev.evaluate({"q1": {"d2": 3.0, "d1": 1.0}})["RR(rel=2)"]
    {'q1': 0.5}
    """

    def __init__(self, qrels: Judgments, measures: Iterable[str | Measure],
                 *, complete: bool = False):
        self.measures = [parse_measure(m) for m in measures]
        if not self.measures:
            raise ValueError("no measures given")
        self.qrels = qrels
        self.complete = complete
        self._qids = sorted(q for q, docs in qrels.items() if docs)
        self._ideal = _ideal_ranking(qrels, self._qids)
        max_len = max(self._ideal.sizes.max(initial=0), 1)
        self._discount = 1.0 / np.log2(np.arange(max_len) + 2.0)  # grown on demand for long runs

    def evaluate(self, run: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
        """``{str(measure): {qid: value}}`` for the queries trec_eval would score (see module doc)."""
        present = [i for i, q in enumerate(self._qids) if run.get(q)]
        qids = [self._qids[i] for i in present]
        ranking = rank_run(self.qrels, run, qids)
        ideal_rows = np.asarray(present, np.int64)
        results: dict[str, dict[str, float]] = {}
        for measure in self.measures:
            values = self._measure(measure, ranking, ideal_rows)
            per_query = dict(zip(qids, values.tolist()))
            if self.complete:
                per_query = {q: per_query.get(q, 0.0) for q in self._qids}
            results[str(measure)] = per_query
        return results

    def _discounts(self, rank: np.ndarray) -> np.ndarray:
        if len(rank) and rank.max() >= len(self._discount):
            self._discount = 1.0 / np.log2(np.arange(rank.max() + 1) + 2.0)
        return self._discount[rank]

    def _dcg(self, ranking: Ranking, kind: str) -> np.ndarray:
        gains = np.maximum(ranking.grades, 0.0)
        if kind == "exp-log2":
            gains = np.exp2(gains) - 1.0
        return ranking.per_query_sum(gains * self._discounts(ranking.rank))

    def _measure(self, m: Measure, ranking: Ranking, ideal_rows: np.ndarray) -> np.ndarray:
        top = ranking.head(m.cutoff)
        if m.name in ("nDCG", "DCG"):
            dcg = self._dcg(top, m.dcg)
            if m.name == "DCG":
                return dcg
            return _safe_divide(dcg, self._dcg(self._ideal.head(m.cutoff), m.dcg)[ideal_rows])
        if m.name == "Judged":
            return _safe_divide(top.per_query_sum(top.grades != UNJUDGED), top.sizes)
        hit = top.grades >= m.rel
        if m.name == "P":
            return top.per_query_sum(hit) / m.cutoff
        if m.name == "RR":
            first = np.full(len(top.sizes), np.inf)
            where = np.flatnonzero(hit)
            q = top.query[where]
            leading = np.r_[True, q[1:] != q[:-1]] if len(q) else np.zeros(0, bool)
            first[q[leading]] = top.rank[where[leading]]
            return 1.0 / (first + 1.0)
        num_rel = self._ideal.per_query_sum(self._ideal.grades >= m.rel)[ideal_rows]
        hits = top.per_query_sum(hit)
        if m.name == "R":
            return _safe_divide(hits, num_rel)
        # AP: the precision at each relevant rank, summed, over the number of relevant documents
        hits_so_far = np.cumsum(hit) - (np.cumsum(hits) - hits)[top.query]
        return _safe_divide(top.per_query_sum(hit * hits_so_far / (top.rank + 1.0)), num_rel)


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
