"""The rerank job: candidate lists reranked by an executor into a TREC run, resumable and atomic.

    rerank_job(lists, Executor(rerank=RerankStage(reranker, depth)), "out.trec")             # in-process
    rerank_job(lists, RayExecutor(executor, RayOptions(num_replicas=4)), "out.trec")         # actor pool

`rankline rerank` runs it in-process and `rankline batch-rerank` on a pool of Ray actors; the output is
the same. The run is written as a `rankline.pipelines.journal.ResumableRun`: every finished query is
journaled at once beside the output (`OUT.partial.jsonl`), a job started again with the same inputs
and settings skips the queries already there, and the output run appears only when every query is
done, queries in input order.

Reranker actors that die (a crashed process, a killed actor) are restarted by Ray, which re-runs
the calls they held; the reranker is rebuilt from its Factory, so the output is the same as an
uninterrupted job's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from rankline.formats import Candidates
from rankline.pipelines.actors import RayExecutor
from rankline.pipelines.executor import Executor
from rankline.pipelines.journal import ResumableRun


@dataclass(frozen=True)
class JobReport:
    queries: int  # in the input
    resumed: int  # taken from the journal of an earlier, interrupted run
    reranked: int  # computed by this run
    out: Path


def rerank_job(
    lists: Sequence[Candidates],
    executor: Executor | RayExecutor,
    out: str | os.PathLike,
    *,
    queries_per_task: int = 1,
    identity: Mapping[str, object] | None = None,
    tag: str = "rankline",
    progress: bool = True,
    on_query_done: Callable[[str], None] | None = None,
) -> JobReport:
    """Rerank every list with `executor`'s rerank stage, `queries_per_task` lists per call, and write
    the run to `out`; the executor is closed at the end. `identity` names what determines the output
    (reranker, model, depth, ...): it goes into the journal's fingerprint. `on_query_done(qid)` runs
    after each query is journaled."""
    from tqdm.auto import tqdm

    with ResumableRun(out, lists, dict(identity or {})) as run:
        todo = [c for c in lists if c.query.qid not in run.done]
        bar = tqdm(total=len(lists), initial=run.resumed, unit="query", disable=not progress, desc="rerank")
        try:
            for task in executor.rerank_tasks(todo, queries_per_task):
                for finished in task:
                    run.add(finished)
                    bar.update(1)
                    if on_query_done is not None:
                        on_query_done(finished.query.qid)
        finally:
            bar.close()
            executor.close()
        run.finish(tag)
    return JobReport(len(lists), run.resumed, len(todo), run.out)
