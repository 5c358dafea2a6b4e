"""trec_eval's ranking order, the one place it is computed: score descending, ties by docid descending.

trec_eval stores a run's scores as C floats, so scores are compared in single precision: two scores
that differ only beyond float32 precision tie, and the docid decides.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    import numpy as np


def trec_order(docids: Sequence[str], scores: np.ndarray) -> np.ndarray:
    """Indices that order one query's documents in trec_eval order; `scores` must be float32 already."""
    import numpy as np

    order = np.argsort(-scores)
    ordered = scores[order]
    if len(ordered) > 1 and np.any(ordered[1:] == ordered[:-1]):  # ties: the larger docid first
        docid_rank = np.empty(len(docids), np.int64)
        docid_rank[np.argsort(np.array(docids))] = np.arange(len(docids))  # code point order, as str
        order = np.lexsort((-docid_rank, -scores))
    return order


def ranked(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """(docid, score) pairs of {docid: score} in trec_eval order (the scores keep full precision)."""
    import numpy as np

    items = list(docs.items())
    if not items:
        return []
    scores = np.fromiter((score for _, score in items), np.float64, len(items)).astype(np.float32)
    return [items[i] for i in trec_order([docid for docid, _ in items], scores)]
