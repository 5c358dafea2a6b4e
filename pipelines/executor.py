"""The one retrieve → rerank executor: every placement runs this code.

    executor = Executor(RetrieveStage(retriever, k=100), RerankStage(reranker, depth=20))
    lists = executor.retrieve(queries, k=10)   # each query with its top max(10, 100) hits
    lists = executor.rerank(lists)             # the top 20 of each reranked, the rest below them
    executor.rank(queries, k=10)               # both, then the top 10 of each

It runs in-process (the `Pipeline` builder, `rankline rerank`, `rankline search`), as Ray actors
(`actors.RayExecutor`: `Pipeline.on_ray()`, `rankline batch-rerank`) and inside the Serve deployments
(`serve_app`). Each of those holds a copy of the same Executor and calls `retrieve` or `rerank` on it.
A stage's source is the stage object itself or a picklable `Factory` recipe. Stages are built where
they are used, on first use, and only those used: a copy sent to a Ray actor or a Serve replica
carries the sources, never built stages, so a reranker actor loads the model and never the index.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from rankline.formats import Candidates, Hit, Query
from rankline.rerankers import DEFAULT_DEPTH, Reranker, rerank_head
from rankline.retrieval.base import Retriever


@dataclass(frozen=True)
class Factory:
    """A picklable recipe for a stage: `build()` calls `fn(*args, **kwargs)` where the stage runs."""

    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        return self.fn(*self.args, **dict(self.kwargs))


def materialize(source: Any) -> Any:
    """The stage object itself, or what its Factory builds."""
    return source.build() if isinstance(source, Factory) else source


@dataclass(frozen=True)
class RetrieveStage:
    source: Retriever | Factory
    k: int = 100  # candidates retrieved per query; a request for more hits retrieves more


@dataclass(frozen=True)
class RerankStage:
    source: Reranker | Factory
    depth: int = DEFAULT_DEPTH  # how many candidates of a query the reranker receives


def top(lists: Sequence[Candidates], k: int) -> list[list[Hit]]:
    """The first `k` hits of each list: what a request for `k` hits gets."""
    return [list(c.hits[:k]) for c in lists]


class Executor:
    """Retrieve, then rerank the head of each list; see the module docstring."""

    def __init__(self, retrieve: RetrieveStage | None = None, rerank: RerankStage | None = None):
        self.retrieve_stage, self.rerank_stage = retrieve, rerank
        self._retriever: Retriever | None = None
        self._reranker: Reranker | None = None

    def __reduce__(self):  # a copy carries the stages' sources, never what they built
        return type(self), (self.retrieve_stage, self.rerank_stage)

    def retrieve(self, queries: Sequence[Query], k: int | Sequence[int]) -> list[Candidates]:
        """Each query with its top max(k, the retrieve stage's k) hits, from one `search_batch` call;
        `k` is one count for every query or one per query (a batch of Serve requests)."""
        if not queries:
            return []
        if self._retriever is None:
            self._retriever = materialize(self.retrieve_stage.source)
        wanted = [max(n, self.retrieve_stage.k) for n in ([k] * len(queries) if isinstance(k, int) else k)]
        hits = self._retriever.search_batch(list(queries), max(wanted))
        return [Candidates(q, tuple(h[:n])) for q, h, n in zip(queries, hits, wanted)]

    def rerank(self, lists: Sequence[Candidates]) -> list[Candidates]:
        """Each list with its top `depth` candidates reranked and the rest below them (`rerank_head`:
        the one head cut and score rule); one `rerank_batch` call for them all."""
        if self._reranker is None:
            self._reranker = materialize(self.rerank_stage.source)
        reranked = rerank_head(self._reranker, lists, self.rerank_stage.depth)
        return [Candidates(c.query, tuple(hits)) for c, hits in zip(lists, reranked)]

    def rank(self, queries: Sequence[Query], k: int) -> list[list[Hit]]:
        """The top `k` hits of each query: retrieve, rerank (when there is a rerank stage), cut."""
        lists = self.retrieve(queries, k)
        return top(self.rerank(lists) if self.rerank_stage is not None else lists, k)

    def rerank_tasks(self, lists: Sequence[Candidates], queries_per_task: int) -> Iterator[list[Candidates]]:
        """`rerank` over `queries_per_task` lists at a time, each task's result as it is done."""
        for i in range(0, len(lists), queries_per_task):
            yield self.rerank(lists[i : i + queries_per_task])

    def close(self) -> None:
        """Drop the built stages (they are built again on the next use)."""
        self._retriever = self._reranker = None
