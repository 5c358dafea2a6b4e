"""The pipeline builder: retrieve, then rerank the head of the list, in-process or on Ray actors.

    pipe = Pipeline.builder().retrieve(retriever, k=100).rerank(reranker, depth=20).build()
    pipe.search("what is ...", k=10)          # -> list[Hit], best first
    pipe.run({"q1": "text", ...})              # -> {qid: {docid: score}}, the evaluation run type
    pipe.evaluate(qrels, ["nDCG@10"], queries=topics)
    pipe.on_ray(num_replicas=2).run(topics)    # same stages as Ray actors, same results
    pipe.as_pyterrier()                        # a pyterrier.Transformer (each stage has .as_pyterrier() too)

`k` is how many candidates the retriever returns per query (a search for more hits retrieves more);
`depth` (default DEFAULT_DEPTH = 100) is how many of them the reranker receives; the rest keep their
order below the reranked head. A stage is any object that follows the Retriever / Reranker protocol,
or a `Factory` that builds one where the stage runs (inside its actor on Ray, so a model loads once
per replica and not in the driver). The stages run on `rankline.pipelines.executor.Executor`.
Pipelines are immutable: every builder call returns a new one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from rankline.formats import Hit, Query
from rankline.pipelines.actors import RayExecutor, RayOptions
from rankline.pipelines.executor import Executor, Factory, RerankStage, RetrieveStage
from rankline.rerankers import DEFAULT_DEPTH, Reranker
from rankline.retrieval.base import Retriever

Run = dict[str, dict[str, float]]
Queries = Mapping[str, str] | Iterable[Query]


def as_queries(queries: Queries) -> list[Query]:
    """Accept {qid: text} (what read_topics returns) or an iterable of Query."""
    if isinstance(queries, Mapping):
        return [Query(str(qid), text) for qid, text in queries.items()]
    out = list(queries)
    bad = [q for q in out if not isinstance(q, Query)]
    if bad:
        raise ValueError(f"queries must be Query records or a {{qid: text}} mapping, got {type(bad[0]).__name__}")
    return out


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

    def rerank(self, reranker: Reranker | Factory, depth: int = DEFAULT_DEPTH) -> "Pipeline":
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

    def executor(self) -> Executor:
        """The stages as the one retrieve → rerank executor (what every placement runs)."""
        built = self.build()
        return Executor(built.retrieve_stage, built.rerank_stage)

    def on_ray(
        self, num_replicas: int = 1, resources: Mapping[str, float] | None = None, queries_per_task: int = 8
    ) -> "Pipeline":
        """The same pipeline with the retriever in a Ray actor and a pool of `num_replicas` reranker
        actors, sent `queries_per_task` queries per call. Connects to the running Ray instance, or
        starts a local one on 127.0.0.1."""
        _check_positive("num_replicas", num_replicas)
        _check_positive("queries_per_task", queries_per_task)
        opts = RayOptions(num_replicas, dict(resources or {}), queries_per_task)
        return dataclasses.replace(self.build(), ray=opts, _runner=[])

    def search(self, text: str, k: int = 10) -> list[Hit]:
        """The top `k` hits for one query text, best first."""
        _check_positive("k", k)
        return self._rank([Query("query", text)], k)[0]

    def run(self, queries: Queries) -> Run:
        """Rank every query; returns {qid: {docid: score}} over the retrieve stage's k hits."""
        qs = as_queries(queries)
        ranked = self._rank(qs, self.build().retrieve_stage.k)
        return {q.qid: {h.docid: float(h.score) for h in hits} for q, hits in zip(qs, ranked)}

    def evaluate(
        self, qrels: Mapping[str, Mapping[str, int]], measures: Sequence[str], *, queries: Queries
    ) -> dict[str, float]:
        """Run `queries` and return {measure: mean over queries} against `qrels` (trec_eval
        semantics, ir_measures names; rankline.evaluation.metrics.evaluate gives per-query values)."""
        from rankline.evaluation.metrics import evaluate, mean_scores

        return mean_scores(evaluate(qrels, self.run(queries), list(measures)))

    def as_pyterrier(self):
        """The whole pipeline as a `pyterrier.Transformer`: queries (qid, query) in, the retrieve stage's k
        hits per query out (qid, query, docno, text, title, score, rank; rank from 0), the same ranking
        as `run` (in-process or on Ray, as this pipeline runs)."""
        from rankline.formats.pyterrier import RetrieverTransformer

        return RetrieverTransformer(self._rank, self.build().retrieve_stage.k, "Pipeline")

    def close(self) -> None:
        """Release the stages (kills the Ray actors); the pipeline rebuilds them if used again."""
        while self._runner:
            self._runner.pop().close()

    def _rank(self, queries: Sequence[Query], k: int) -> list[list[Hit]]:
        if not self._runner:
            executor = self.executor()
            self._runner.append(executor if self.ray is None else RayExecutor(executor, self.ray))
        return self._runner[0].rank(queries, k)


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
