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


class PyTerrierReranker:
    """Gives a reranker `.as_pyterrier(depth)`: itself as a PyTerrier transformer (needs the `pyterrier` extra)."""

    def as_pyterrier(self, depth: int | None = None):
        """A `pyterrier.Transformer` that reranks any result frame carrying `text` (qid, query, docno, text; a
        `title` column is used too) and returns all its rows rescored, ranked from 0 by descending score.
        With `depth`, only each query's top `depth` are reranked and the rest keep their order below them
        (`rerank_head`); by default every row it receives is, as `first_stage % depth >> reranker` does."""
        from rankline.formats.pyterrier import RerankerTransformer

        if depth is None:
            return RerankerTransformer(self.rerank_batch, type(self).__name__)
        from rankline.rerankers.ranking import rerank_head

        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"depth must be a positive integer, got {depth!r}")
        return RerankerTransformer(lambda lists: rerank_head(self, lists, depth), type(self).__name__)
