"""Batch reranking of candidate lists over a pool of Ray actors, resumable and atomic.

The run is written as a `rankline.pipelines.journal.ResumableRun`: every finished query is journaled
at once beside the output (`OUT.partial.jsonl`), a job started again with the same inputs and settings
skips the queries already there, and the output run appears only when every query is done, queries
in input order.

Reranker actors that die (a crashed process, a killed actor) are restarted by Ray, which re-runs
the calls they held; the reranker is rebuilt from its Factory, so the output is the same as an
uninterrupted job's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from rankline.pipelines.journal import ResumableRun
from rankline.pipelines.pipeline import Factory
from rankline.formats import Hit, Query


@dataclass(frozen=True)
class BatchReport:
    queries: int  # in the input
    resumed: int  # taken from the journal of an earlier, interrupted run
    reranked: int  # computed by this run
    out: Path


@dataclass(frozen=True)
class BatchSettings:
    """How the job runs; none of these change the output."""

    workers: int = 1
    queries_per_task: int = 1
    resources: Mapping[str, float] = field(default_factory=lambda: {"CPU": 1})
    max_restarts: int = 3
    progress: bool = True


def batch_rerank(
    requests: Sequence[tuple[Query, Sequence[Hit]]],
    reranker: Factory,
    out: str | os.PathLike,
    *,
    settings: BatchSettings = BatchSettings(),
    identity: Mapping[str, object] | None = None,
    tag: str = "rankline",
    on_query_done: Callable[[str], None] | None = None,
) -> BatchReport:
    """Rerank every request's full candidate list with `reranker` (built in each actor) and write
    the run to `out`. `identity` names what determines the output (reranker, model, depth, ...):
    it goes into the journal's fingerprint. `on_query_done(qid)` runs after each query is journaled."""
    import ray
    from ray.util import ActorPool
    from tqdm.auto import tqdm

    from rankline.pipelines.actors import StageActor, actor_options, check_fits, ensure_ray

    with ResumableRun(out, requests, dict(identity or {})) as run:
        todo = [(q, list(hits)) for q, hits in requests if q.qid not in run.done]
        if todo:
            ensure_ray()
            check_fits([settings.resources] * min(settings.workers, len(todo)))
            remote = ray.remote(StageActor).options(**actor_options(settings.resources, settings.max_restarts))
            actors = [remote.remote(reranker) for _ in range(min(settings.workers, len(todo)))]
            pool = ActorPool(actors)
            size = settings.queries_per_task
            for i in range(0, len(todo), size):
                chunk = todo[i : i + size]
                pool.submit(lambda a, c: a.rerank_queries.remote([q for q, _ in c], [h for _, h in c]), chunk)
            bar = tqdm(total=len(requests), initial=run.resumed, unit="query", disable=not settings.progress,
                       desc="batch-rerank")
            try:
                while pool.has_next():
                    for qid, hits in pool.get_next_unordered():
                        run.add(qid, hits)
                        bar.update(1)
                        if on_query_done is not None:
                            on_query_done(qid)
            finally:
                bar.close()
                for actor in actors:
                    ray.kill(actor, no_restart=True)
        run.finish(tag)
    return BatchReport(len(requests), run.resumed, len(todo), run.out)
