"""The pipeline builder: retrieve, then rerank the head of the list, in-process or on Ray actors.

    pipe = Pipeline.builder().retrieve(retriever, k=100).rerank(reranker, depth=20).build()
    pipe.search("what is ...", k=10)          # -> list[Hit], best first
    pipe.run({"q1": "text", ...})              # -> {qid: {docid: score}}, the evaluation run type
    pipe.evaluate(qrels, ["nDCG@10"], queries=topics)
    pipe.on_ray(num_replicas=2).run(topics)    # same stages as Ray actors, same results

A stage is any object that follows the Retriever / Reranker protocol, or a `Factory` that builds
one where the stage runs (inside its actor on Ray, so a model loads once per replica and not in
the driver). Pipelines are immutable: every builder call returns a new one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from rankline.rerankers.base import Reranker
from rankline.retrieval.base import Retriever
from rankline.formats import Hit, Query

Run = dict[str, dict[str, float]]
Queries = Mapping[str, str] | Iterable[Query]


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
    k: int = 100


@dataclass(frozen=True)
class RerankStage:
    source: Reranker | Factory
    depth: int = 20


def rerank_head(
    reranker: Reranker, queries: Sequence[Query], hits_lists: Sequence[Sequence[Hit]], depth: int
) -> list[list[Hit]]:
    """Rerank the top `depth` hits of each list; the tail keeps its order below them.

    Scores strictly decrease down each list: the reranker's own scores for the head, then the
    tail counting down by one from one below the last head score (rank-based, like the rerankers'
    own scores), so a run written from them keeps this exact order under trec_eval's sorting.
    """
    heads = [list(hits[:depth]) for hits in hits_lists]
    todo = [i for i, head in enumerate(heads) if head]
    reranked = reranker.rerank_batch([queries[i] for i in todo], [heads[i] for i in todo]) if todo else []
    for i, new_head in zip(todo, reranked):
        heads[i] = list(new_head)
    return [head + _below(head, hits[depth:]) for head, hits in zip(heads, hits_lists)]


def _below(head: list[Hit], tail: Sequence[Hit]) -> list[Hit]:
    top = head[-1].score - 1.0 if head else 0.0
    return [dataclasses.replace(h, score=top - i) for i, h in enumerate(tail)]


def as_queries(queries: Queries) -> list[Query]:
    """Accept {qid: text} (what read_topics returns) or an iterable of Query."""
    if isinstance(queries, Mapping):
        return [Query(str(qid), text) for qid, text in queries.items()]
    out = list(queries)
    bad = [q for q in out if not isinstance(q, Query)]
    if bad:
        raise ValueError(f"queries must be Query records or a {{qid: text}} mapping, got {type(bad[0]).__name__}")
    return out


def to_run(queries: Sequence[Query], hits_lists: Sequence[Sequence[Hit]]) -> Run:
    return {q.qid: {h.docid: float(h.score) for h in hits} for q, hits in zip(queries, hits_lists)}


class LocalRunner:
    """Runs the stages in this process (built on first use)."""

    def __init__(self, retrieve: RetrieveStage, rerank: RerankStage | None):
        self.retriever: Retriever = materialize(retrieve.source)
        self.reranker: Reranker | None = materialize(rerank.source) if rerank else None
        self.depth = rerank.depth if rerank else 0

    def rank_batch(self, queries: Sequence[Query], k: int) -> list[list[Hit]]:
        hits = self.retriever.search_batch(list(queries), k)
        if self.reranker is not None:
            hits = rerank_head(self.reranker, queries, hits, self.depth)
        return hits

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class RayOptions:
    """How `.on_ray()` places the stages: `num_replicas` reranker actors, each asking for
    `resources` ({"CPU": 1, "GPU": 0.5, "<custom>": n}); queries travel in chunks of `chunk_size`."""

    num_replicas: int = 1
    resources: Mapping[str, float] = field(default_factory=dict)
    chunk_size: int = 8
    max_restarts: int = 3


@dataclass(frozen=True)
class Pipeline:
    """Retrieve `k` candidates, rerank the top `depth` of them; see the module docstring."""

    retrieve_stage: RetrieveStage | None = None
    rerank_stage: RerankStage | None = None
    ray: RayOptions | None = None
    _runner: list = field(default_factory=list, repr=False, compare=False)  # built lazily, at most one

    @classmethod
    def builder(cls) -> "Pipeline":
        return cls()

    def retrieve(self, retriever: Retriever | Factory, k: int = 100) -> "Pipeline":
        _check_positive("k", k)
        return dataclasses.replace(self, retrieve_stage=RetrieveStage(retriever, k), _runner=[])

    def rerank(self, reranker: Reranker | Factory, depth: int = 20) -> "Pipeline":
        _check_positive("depth", depth)
        return dataclasses.replace(self, rerank_stage=RerankStage(reranker, depth), _runner=[])

    def build(self) -> "Pipeline":
        """Check the stages fit together; returns the pipeline (stages are built on first use)."""
        if self.retrieve_stage is None:
            raise ValueError("a pipeline needs a retrieve stage: Pipeline.builder().retrieve(retriever, k=...)")
        for stage, protocol in ((self.retrieve_stage, Retriever), (self.rerank_stage, Reranker)):
            if stage is not None and not isinstance(stage.source, (Factory, protocol)):
                raise ValueError(f"{type(stage.source).__name__} does not implement {protocol.__name__}")
        return self

    def on_ray(
        self, num_replicas: int = 1, resources: Mapping[str, float] | None = None, chunk_size: int = 8
    ) -> "Pipeline":
        """The same pipeline with each stage in a Ray actor and a pool of `num_replicas` reranker
        actors. Connects to the running Ray instance, or starts a local one on 127.0.0.1."""
        _check_positive("num_replicas", num_replicas)
        _check_positive("chunk_size", chunk_size)
        opts = RayOptions(num_replicas, dict(resources or {}), chunk_size)
        return dataclasses.replace(self.build(), ray=opts, _runner=[])

    def search(self, text: str, k: int = 10) -> list[Hit]:
        """The top `k` hits for one query text, best first."""
        _check_positive("k", k)
        return self._rank([Query("query", text)], k)[0][:k]

    def run(self, queries: Queries) -> Run:
        """Rank every query; returns {qid: {docid: score}} over the retrieve stage's k hits."""
        qs = as_queries(queries)
        return to_run(qs, self._rank(qs, self.build().retrieve_stage.k))

    def evaluate(
        self, qrels: Mapping[str, Mapping[str, int]], measures: Sequence[str], *, queries: Queries
    ) -> dict[str, float]:
        """Run `queries` and return {measure: mean over queries} against `qrels` (trec_eval
        semantics, ir_measures names; rankline.evaluation.metrics.evaluate gives per-query values)."""
        from rankline.evaluation.metrics import evaluate, mean_scores

        return mean_scores(evaluate(qrels, self.run(queries), list(measures)))

    def close(self) -> None:
        """Release the stages (kills the Ray actors); the pipeline rebuilds them if used again."""
        while self._runner:
            self._runner.pop().close()

    def _rank(self, queries: Sequence[Query], k: int) -> list[list[Hit]]:
        stage = self.build().retrieve_stage
        k = max(k, stage.k)
        if not self._runner:
            if self.ray is None:
                self._runner.append(LocalRunner(stage, self.rerank_stage))
            else:
                from rankline.pipelines.actors import RayRunner

                self._runner.append(RayRunner(stage, self.rerank_stage, self.ray))
        return self._runner[0].rank_batch(queries, k)


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
