"""The interface every first-stage retriever implements."""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

from rankline.formats import Hit, Query


@runtime_checkable
class Retriever(Protocol):
    """Returns the top-k hits of a query, best first."""

    def search(self, query: Query, k: int) -> list[Hit]: ...

    def search_batch(self, queries: Sequence[Query], k: int) -> list[list[Hit]]: ...


def check_queries(queries: Sequence[Query]) -> None:
    """Raise ValueError naming the first query whose text is not a string of valid Unicode: a lone
    surrogate (from bytes that are not UTF-8 decoded with surrogateescape, or half a UTF-16 pair) makes
    the tokenizer or Lucene fail, so it is refused before either sees it."""
    for query in queries:
        text = query.text
        if not isinstance(text, str):
            raise ValueError(f"query {query.qid!r}: the text must be a string, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"query {query.qid!r}: character {exc.start + 1} ({text[exc.start]!r}) is a lone surrogate, "
                             "not valid Unicode (a byte that is not UTF-8, or half a UTF-16 pair); send UTF-8 text") from None


class PyTerrierRetriever:
    """Gives a retriever `.as_pyterrier(k)`: itself as a PyTerrier transformer (needs the `pyterrier` extra)."""

    def as_pyterrier(self, k: int = 1000):
        """A `pyterrier.Transformer` from queries (qid, query) to this retriever's top `k` hits per query
        (qid, query, docno, text, title, score, rank; rank from 0), e.g. `retriever.as_pyterrier() % 100 >> reranker`."""
        from rankline.formats.pyterrier import RetrieverTransformer

        return RetrieverTransformer(self.search_batch, k, type(self).__name__)


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
