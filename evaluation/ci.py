"""Confidence intervals for a run's benchmark score from human labels on a few queries and LLM labels
on all of them: the query split, the per-query values, and one entry point per method.

The query universe is the set of queries with LLM labels. Labelled queries are those whose human
labels may be used (given explicitly, or drawn at random); every other human label is dropped before
anything is computed, so it cannot leak into an interval.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from rankline.evaluation import crc, intervals
from rankline.evaluation.intervals import Interval
from rankline.evaluation.label_dist import LabelDist, empirical_label_dist
from rankline.evaluation.measures import parse_measure
from rankline.evaluation.metrics import evaluate

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

CI_METHODS = ("human", "bootstrap", "ppi", "ppi-all", "ppi++", "crc")


@dataclass(frozen=True)
class QuerySplit:
    """Queries with usable human labels, and the rest of the universe."""

    labelled: tuple[str, ...]
    unlabelled: tuple[str, ...]

    @property
    def qids(self) -> tuple[str, ...]:
        return self.labelled + self.unlabelled

    @property
    def n_total(self) -> int:
        return len(self.labelled) + len(self.unlabelled)


def split_queries(
    universe: Iterable[str],
    human_qids: Iterable[str],
    *,
    labelled_qids: Iterable[str] | None = None,
    n_labelled: int | None = None,
    seed: int = 0,
) -> QuerySplit:
    """Split the universe into labelled and unlabelled queries: `labelled_qids` exactly, or
    `n_labelled` drawn with `seed` from the universe's queries that have human labels."""
    universe = sorted(set(universe))
    in_universe = set(universe)
    candidates = sorted(in_universe & set(human_qids))
    if (labelled_qids is None) == (n_labelled is None):
        raise ValueError("give either the labelled query ids or the number of queries to label")
    if labelled_qids is not None:
        labelled = sorted(set(labelled_qids))
        missing = sorted(set(labelled) - set(candidates))
        if missing:
            raise ValueError(
                f"labelled queries without human labels or without LLM labels: {', '.join(missing[:5])}"
                + (" ..." if len(missing) > 5 else "")
            )
    else:
        if not 2 <= n_labelled <= len(candidates):
            raise ValueError(f"can label 2..{len(candidates)} queries (those with human labels), asked for {n_labelled}")
        labelled = sorted(np.random.default_rng(seed).choice(candidates, n_labelled, replace=False).tolist())
    chosen = set(labelled)
    return QuerySplit(tuple(labelled), tuple(q for q in universe if q not in chosen))


def read_labelled_qids(path: str) -> list[str]:
    """Query ids, one per line (the first whitespace-separated token; blank lines and # comments skipped)."""
    from rankline.formats import FormatError, open_text

    with open_text(path) as fh:
        qids = [line.split()[0] for line in fh if line.strip() and not line.lstrip().startswith("#")]
    if not qids:
        raise FormatError(path, None, "expected one query id per line, found none")
    return qids


def per_query_values(qrels: Qrels, run: Run, measure: str, qids: Sequence[str]) -> np.ndarray:
    """The measure for each of `qids` (0 where the run or the qrels lack the query), from these qrels only."""
    subset = {q: qrels[q] for q in qids if q in qrels}
    values = evaluate(subset, run, [measure], complete=True)[str(parse_measure(measure))] if subset else {}
    return np.array([values.get(q, 0.0) for q in qids], dtype=np.float64)


def llm_values(label_sets: Sequence[Qrels], run: Run, measure: str, qids: Sequence[str]) -> np.ndarray:
    """The measure with LLM labels per query, averaged over the label sets."""
    if not label_sets:
        raise ValueError("no LLM label sets given")
    return np.mean([per_query_values(labels, run, measure, qids) for labels in label_sets], axis=0)


def confidence_interval(
    method: str,
    *,
    human_qrels: Qrels,
    llm_labels: Sequence[Qrels],
    run: Run,
    measure: str,
    split: QuerySplit,
    alpha: float = 0.05,
    label_dist: LabelDist | None = None,
    baseline: Run | None = None,
    seed: int = 0,
) -> Interval:
    """Interval for the mean of `measure` over the benchmark (see Interval.estimand), or for the mean
    paired difference run - baseline when a baseline run is given. CRC uses `label_dist` when given,
    else the empirical distribution of the LLM label sets; its bound on the unlabelled queries is
    restated for all queries (labelled ones count with their human values), like ppi-all."""
    if method not in CI_METHODS:
        raise ValueError(f"unknown interval method {method!r}; expected one of {', '.join(CI_METHODS)}")
    human = {q: human_qrels[q] for q in split.labelled}  # the only human labels that may be used
    n = len(split.labelled)

    def paired(values_of) -> np.ndarray:
        values = values_of(run)
        return values - values_of(baseline) if baseline is not None else values

    y = paired(lambda r: per_query_values(human, r, measure, split.labelled))
    if method == "human":
        return intervals.human_t(y, alpha, n_total=split.n_total)
    if method == "bootstrap":
        return intervals.bootstrap_basic(y, alpha, rng=seed, n_total=split.n_total)
    if method == "crc":
        dist = label_dist if label_dist is not None else empirical_label_dist(llm_labels)
        grid = crc.dcg_grid(run, dist, split.qids, measure)
        if baseline is not None:
            grid = crc.paired_grid(grid, crc.dcg_grid(baseline, dist, split.qids, measure))
        return intervals.to_all_queries(crc.crc_dataset(y, grid[:n], grid[n:], alpha, rng=seed), y)
    f = paired(lambda r: llm_values(llm_labels, r, measure, split.qids))
    if method == "ppi-all":
        return intervals.ppi_all(y, f[:n], f[n:], alpha)
    return intervals.ppi_mean(y, f[:n], f[n:], alpha, lam=1.0 if method == "ppi" else None, rng=seed)
