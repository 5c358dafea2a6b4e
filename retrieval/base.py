"""The interface every first-stage retriever implements."""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from rankline.retrieval.types import Hit, Query


@runtime_checkable
class Retriever(Protocol):
    """Returns the top-k hits of a query, best first."""

    def search(self, query: Query, k: int) -> list[Hit]: ...

    def search_batch(self, queries: Sequence[Query], k: int) -> list[list[Hit]]: ...
