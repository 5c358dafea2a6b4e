"""The interface every reranker implements."""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from rankline.formats import Hit, Query


@runtime_checkable
class Reranker(Protocol):
    """Reorders the candidate hits of a query; returns them best first with strictly decreasing scores."""

    def rerank(self, query: Query, hits: Sequence[Hit]) -> list[Hit]: ...

    def rerank_batch(self, queries: Sequence[Query], hits: Sequence[Sequence[Hit]]) -> list[list[Hit]]:
        """Rerank several queries at once (implementations batch their forward passes across queries)."""
        ...
