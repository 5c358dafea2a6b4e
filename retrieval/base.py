"""The interface every first-stage retriever implements."""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

from rankline.formats import Hit, Query


@runtime_checkable
class Retriever(Protocol):
    """Returns the top-k hits of a query, best first."""

    def search(self, query: Query, k: int) -> list[Hit]: ...

    def search_batch(self, queries: Sequence[Query], k: int) -> list[list[Hit]]: ...


class ReopenedOnUnpickle:
    """Base of the retrievers over an index folder. Their live handles (FAISS, Lucene in the JVM,
    SQLite) cannot be pickled, so one opened by `open_retriever` travels to another process (a Ray
    actor, say) as the arguments that open it again there; the same pipeline object then runs
    in-process or on Ray unchanged."""

    opened_with: dict[str, Any] | None = None

    def __reduce__(self):
        if self.opened_with is None:
            raise TypeError(f"{type(self).__name__} holds live index handles and cannot be pickled; "
                            "open it with rankline.retrieval.open_retriever to send it to another process")
        return (_reopen, (self.opened_with,))


def _reopen(opened_with: dict[str, Any]) -> Retriever:
    from rankline.retrieval.retrievers import open_retriever

    return open_retriever(**opened_with)
