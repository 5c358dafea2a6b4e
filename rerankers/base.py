"""The interface every reranker implements."""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from rankline.formats import Candidates, Hit


@runtime_checkable
class Reranker(Protocol):
    """Reorders the candidates of queries; callers that rerank only a list's head use `rerank_head`."""

    def rerank_batch(self, lists: Sequence[Candidates]) -> list[list[Hit]]:
        """For each query, all of its hits best first with strictly decreasing scores (implementations
        batch their forward passes across queries)."""
        ...
