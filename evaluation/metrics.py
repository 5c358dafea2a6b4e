"""Ranking metrics that equal trec_eval's, computed for all queries at once with NumPy.

Names follow ir_measures: ``nDCG@10``, ``nDCG(dcg='exp-log2')@10`` (Burges gain 2^g - 1),
``DCG@10`` (unnormalised, same gains), ``RR``, ``RR(rel=2)@10``, ``R@100``, ``P@10``, ``AP``,
``AP@100``, ``Judged@10``. Binary measures (RR, R, P, AP) count a document as relevant when its grade
is at least ``rel`` (default 1; TREC DL uses ``rel=2``); nDCG and DCG use the grades as gains.

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

The run is joined with the qrels and sorted once (:class:`RankedRun`); every measure is then a few
vectorised passes over flat arrays, so many measures cost little more than one.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "Evaluator",
    "Measure",
    "RankedRun",
    "evaluate",
    "mean",
    "mean_scores",
    "parse_measure",
]

# grade given to retrieved documents that have no judgment (trec_eval's RELVALUE_NONPOOL)
UNJUDGED = np.iinfo(np.int64).min

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


def _trec_order(docids: Sequence[str], scores: np.ndarray) -> np.ndarray:
    """Indices that order one query's documents by score descending, then docid descending.

    `scores` must already be single precision: trec_eval stores a run's scores as C floats, so two
    scores that differ only beyond float32 precision tie and the docid decides.
    """
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    if len(ordered) > 1 and np.any(ordered[1:] == ordered[:-1]):  # ties: docid decides
        order = np.array(sorted(range(len(docids)), key=lambda i: (scores[i], docids[i]), reverse=True))
    return order


@dataclass(frozen=True)
class RankedRun:
    """A run joined with the qrels and sorted once, as flat arrays (query-major, rank-minor).

    ``qids[q]`` owns positions ``offsets[q]:offsets[q+1]`` of ``grades`` (the judged grade of the
    document at that rank, :data:`UNJUDGED` if it has none); ``rank`` is the 0-based rank and
    ``query`` the query index of each position.
    """

    qids: list[str]
    offsets: np.ndarray
    grades: np.ndarray
    rank: np.ndarray
    query: np.ndarray

    @classmethod
    def build(cls, qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]],
              qids: Sequence[str]) -> "RankedRun":
        sizes = np.fromiter((len(run[q]) for q in qids), np.int64, len(qids))
        offsets = np.zeros(len(qids) + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        grades = np.empty(offsets[-1], np.int64)
        for q, qid in enumerate(qids):
            docs, judged = run[qid], qrels[qid]
            docids = list(docs)
            n = len(docids)
            scores = np.fromiter(docs.values(), np.float64, n).astype(np.float32)
            found = np.fromiter(map(judged.get, docids, itertools.repeat(UNJUDGED)), np.int64, n)
            grades[offsets[q]:offsets[q + 1]] = found[_trec_order(docids, scores)]
        query = np.repeat(np.arange(len(qids)), sizes)
        rank = np.arange(offsets[-1]) - offsets[:-1][query]
        return cls(list(qids), offsets, grades, rank, query)


@dataclass(frozen=True)
class _JudgedPool:
    """Per-query facts from the qrels alone: grades of every judged document, best first."""

    offsets: np.ndarray
    grades: np.ndarray  # positive grades only, descending within each query
    rank: np.ndarray
    query: np.ndarray
    all_grades: dict[str, np.ndarray]  # qid -> every judged grade (for relevant-document counts)

    @classmethod
    def build(cls, qrels: Mapping[str, Mapping[str, int]], qids: Sequence[str]) -> "_JudgedPool":
        all_grades = {q: np.fromiter(qrels[q].values(), np.int64, len(qrels[q])) for q in qids}
        positive = [np.sort(all_grades[q][all_grades[q] > 0])[::-1] for q in qids]
        sizes = np.fromiter(map(len, positive), np.int64, len(qids))
        offsets = np.zeros(len(qids) + 1, np.int64)
        np.cumsum(sizes, out=offsets[1:])
        query = np.repeat(np.arange(len(qids)), sizes)
        grades = np.concatenate(positive) if positive else np.zeros(0, np.int64)
        return cls(offsets, grades, np.arange(offsets[-1]) - offsets[:-1][query], query, all_grades)

    def num_relevant(self, qids: Sequence[str], rel: int) -> np.ndarray:
        return np.fromiter((np.count_nonzero(self.all_grades[q] >= rel) for q in qids), np.float64, len(qids))


def _per_query_sum(values: np.ndarray, query: np.ndarray, n_queries: int) -> np.ndarray:
    return np.bincount(query, weights=values, minlength=n_queries)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _gain(grades: np.ndarray, kind: str) -> np.ndarray:
    positive = np.maximum(grades, 0).astype(np.float64)
    return np.exp2(positive) - 1.0 if kind == "exp-log2" else positive


def _discount(rank: np.ndarray) -> np.ndarray:
    return 1.0 / np.log2(rank + 2.0)


def _within(rank: np.ndarray, cutoff: int | None) -> np.ndarray | bool:
    return True if cutoff is None else rank < cutoff


class Evaluator:
    """Scores runs against one set of qrels; reuse it to score many runs (the qrels are indexed once).

    >>> ev = Evaluator({"q1": {"d1": 2, "d2": 0}}, ["nDCG@10", "RR(rel=2)"])
    >>> ev.evaluate({"q1": {"d2": 3.0, "d1": 1.0}})["RR(rel=2)"]
    {'q1': 0.5}
    """

    def __init__(self, qrels: Mapping[str, Mapping[str, int]], measures: Iterable[str | Measure],
                 *, complete: bool = False):
        self.measures = [parse_measure(m) for m in measures]
        if not self.measures:
            raise ValueError("no measures given")
        self.qrels = qrels
        self.complete = complete
        self._qids = sorted(q for q, docs in qrels.items() if docs)
        self._pool = _JudgedPool.build(qrels, self._qids)

    def evaluate(self, run: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
        """``{str(measure): {qid: value}}`` for the queries trec_eval would score (see module doc)."""
        present = [i for i, q in enumerate(self._qids) if run.get(q)]
        qids = [self._qids[i] for i in present]
        ranked = RankedRun.build(self.qrels, run, qids)
        pool = self._pool
        pool_subset = np.asarray(present, np.int64)
        results: dict[str, dict[str, float]] = {}
        for measure in self.measures:
            values = self._measure(measure, ranked, pool, pool_subset)
            per_query = dict(zip(qids, values.tolist()))
            if self.complete:
                per_query = {q: per_query.get(q, 0.0) for q in self._qids}
            results[str(measure)] = per_query
        return results

    def _measure(self, m: Measure, rr: RankedRun, pool: _JudgedPool, subset: np.ndarray) -> np.ndarray:
        n = len(rr.qids)
        inside = _within(rr.rank, m.cutoff)
        if m.name in ("nDCG", "DCG"):
            dcg = _per_query_sum(_gain(rr.grades, m.dcg) * _discount(rr.rank) * inside, rr.query, n)
            if m.name == "DCG":
                return dcg
            ideal_all = _per_query_sum(
                _gain(pool.grades, m.dcg) * _discount(pool.rank) * _within(pool.rank, m.cutoff),
                pool.query, len(pool.offsets) - 1)
            return _safe_divide(dcg, ideal_all[subset])
        if m.name == "Judged":
            judged = _per_query_sum((rr.grades != UNJUDGED) & inside, rr.query, n)
            retrieved = np.diff(rr.offsets).astype(np.float64)
            return _safe_divide(judged, retrieved if m.cutoff is None else np.minimum(retrieved, m.cutoff))
        hit = (rr.grades >= m.rel) & inside
        if m.name == "P":
            return _per_query_sum(hit, rr.query, n) / m.cutoff
        if m.name == "RR":
            first = np.full(n, np.inf)
            idx = np.flatnonzero(hit)
            if len(idx):
                q = rr.query[idx]
                head = np.r_[True, q[1:] != q[:-1]]
                first[q[head]] = rr.rank[idx[head]]
            return 1.0 / (first + 1.0)
        num_rel = pool.num_relevant(rr.qids, m.rel)
        if m.name == "R":
            return _safe_divide(_per_query_sum(hit, rr.query, n), num_rel)
        # AP: precision at each relevant rank, summed, over the number of relevant documents
        hits_so_far = np.cumsum(hit)
        before_query = np.r_[0, hits_so_far][rr.offsets[:-1]]
        precision = (hits_so_far - before_query[rr.query]) / (rr.rank + 1.0)
        return _safe_divide(_per_query_sum(precision * hit, rr.query, n), num_rel)


def evaluate(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]],
             measures: Iterable[str | Measure], *, complete: bool = False) -> dict[str, dict[str, float]]:
    """Per-query values ``{measure name: {qid: value}}`` of one run; see :class:`Evaluator`."""
    return Evaluator(qrels, measures, complete=complete).evaluate(run)


def mean(per_query: Mapping[str, float]) -> float:
    """Mean over queries (trec_eval's ``all`` line); NaN when no query was scored."""
    return math.fsum(per_query.values()) / len(per_query) if per_query else math.nan


def mean_scores(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{measure: mean}`` for the output of :func:`evaluate`."""
    return {name: mean(values) for name, values in results.items()}
