"""Confidence intervals for runs' benchmark scores from human labels on a few queries and LLM labels
on all of them, computed for a whole table at once: the query split, the per-query tables (queries x
runs x measures, one per label source), and every interval of a table in one call.

The query universe is the set of queries with LLM labels. Labelled queries are those whose human
labels may be used (given explicitly, or drawn at random); every other human label is dropped before
anything is computed, so it cannot leak into an interval.

    builder = TableBuilder(split, ["nDCG@10"], human_qrels, [llm_labels])
    for run in runs:            # each run is scored once by every label source, then dropped
        builder.add(run)
    interval = builder.table().paired(baseline=0).interval("ppi", alpha=0.05)
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Sequence

import numpy as np

from rankline.evaluation import crc, intervals
from rankline.evaluation.intervals import Interval
from rankline.evaluation.label_dist import LabelDist
from rankline.evaluation.metrics import Evaluator

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


class QueryValues:
    """Per-query values of a run for fixed queries and measures, averaged over one or more label sets:
    an array (queries, measures), 0 where the run or the labels lack a query. Only the labels of
    those queries are kept."""

    def __init__(self, label_sets: Sequence[Qrels], measures: Sequence[str], qids: Sequence[str]):
        if not label_sets:
            raise ValueError("no label sets given")
        self.qids = list(qids)
        self._evaluators = [Evaluator({q: labels[q] for q in self.qids if q in labels}, measures, complete=True)
                            for labels in label_sets]
        self._names = [str(m) for m in self._evaluators[0].measures]

    def __call__(self, run: Run) -> np.ndarray:
        def table(results: Mapping[str, Mapping[str, float]]) -> np.ndarray:
            return np.array([[results[m].get(q, 0.0) for m in self._names] for q in self.qids], np.float64)

        return np.mean([table(evaluator.evaluate(run)) for evaluator in self._evaluators], axis=0)


@dataclass(frozen=True)
class Table:
    """Per-query values over a split's queries (axis 0, labelled first), one column per run (axis 1)
    and measure (axis 2): `human` on the labelled queries only, `llm` (averaged over the label sets)
    on all, and `grid`, CRC's DCG of every query at each lambda (last axis), when it was built."""

    human: np.ndarray
    llm: np.ndarray
    grid: np.ndarray | None = None

    def paired(self, baseline: int) -> "Table":
        """The runs' columns followed by one column per other run: that run minus run `baseline`
        (for the CRC grid, the monotone grid of the difference)."""
        others = [i for i in range(self.llm.shape[1]) if i != baseline]

        def extend(values: np.ndarray, pair=np.subtract) -> np.ndarray:
            return np.concatenate([values, pair(values[:, others], values[:, [baseline]])], axis=1)

        return replace(self, human=extend(self.human), llm=extend(self.llm),
                       grid=None if self.grid is None else extend(self.grid, crc.paired_grid))

    def llm_only(self, estimand: str = "all") -> np.ndarray:
        """Every column's mean with LLM labels alone, over all queries or (estimand "unlabelled") over
        the queries without human labels: the point an LLM-judged leaderboard would report."""
        if estimand not in ("all", "unlabelled"):
            raise ValueError(f"unknown estimand {estimand!r}; expected 'all' or 'unlabelled'")
        return self.llm[self.human.shape[0] if estimand == "unlabelled" else 0:].mean(axis=0)

    def interval(self, method: str, alpha: float = 0.05, seed: int = 0) -> Interval:
        """Every column's interval for the mean over the benchmark (see Interval.estimand); arrays of
        the columns' shape. CRC's bound on the unlabelled queries is restated for all queries (labelled
        ones count with their human values), like ppi-all."""
        if method not in CI_METHODS:
            raise ValueError(f"unknown interval method {method!r}; expected one of {', '.join(CI_METHODS)}")
        y, f = self.human, self.llm
        n, total = y.shape[0], f.shape[0]
        if method == "human":
            return intervals.human_t(y, alpha, n_total=total)
        if method == "bootstrap":
            return intervals.bootstrap_basic(y, alpha, rng=seed, n_total=total)
        if method == "crc":
            if self.grid is None:
                raise ValueError("crc needs the table built with label distributions")
            return intervals.to_all_queries(crc.crc_dataset(y, self.grid[:n], self.grid[n:], alpha, rng=seed), y)
        if method == "ppi-all":
            return intervals.ppi_all(y, f[:n], f[n:], alpha)
        return intervals.ppi_mean(y, f[:n], f[n:], alpha, lam=1.0 if method == "ppi" else None, rng=seed)


class TableBuilder:
    """Builds a :class:`Table` one run at a time, so each run is read once and scored by every label
    source: the human qrels of the labelled queries, the LLM label sets on all queries and, given
    `label_dist` (per-document label distributions, for CRC), the DCG grid on all queries."""

    def __init__(self, split: QuerySplit, measures: Sequence[str], human_qrels: Qrels,
                 llm_labels: Sequence[Qrels], *, label_dist: LabelDist | None = None):
        if label_dist is not None:
            for measure in measures:
                crc.dcg_measure(measure)  # refuse a measure CRC cannot bound before any run is read
        self.split, self.measures, self.label_dist = split, list(measures), label_dist
        self._human = QueryValues([human_qrels], self.measures, split.labelled)
        self._llm = QueryValues(llm_labels, self.measures, split.qids)
        self._columns: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []

    def add(self, run: Run) -> None:
        grid = None
        if self.label_dist is not None:
            grid = np.stack([crc.dcg_grid(run, self.label_dist, self.split.qids, m) for m in self.measures], axis=1)
        self._columns.append((self._human(run), self._llm(run), grid))

    def table(self) -> Table:
        """The table of the runs added so far, in the order they were added."""
        if not self._columns:
            raise ValueError("no runs added")
        human, llm, grids = zip(*self._columns)
        return Table(np.stack(human, axis=1), np.stack(llm, axis=1),
                     None if self.label_dist is None else np.stack(grids, axis=1))
