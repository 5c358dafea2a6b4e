"""Batch reranking of candidate lists over a pool of Ray actors, resumable and atomic.

Every finished query is appended at once to a journal beside the output (`OUT.partial.jsonl`,
one JSON line per query, flushed and fsynced); a job started again with the same inputs and
settings skips the queries already there. The output run appears only when every query is done
(temporary file + rename), queries in input order, and the journal is then removed.

Reranker actors that die (a crashed process, a killed actor) are restarted by Ray, which re-runs
the calls they held; the reranker is rebuilt from its Factory, so the output is the same as an
uninterrupted job's.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from rankline.evaluation.formats import write_run
from rankline.evaluation.io import FormatError
from rankline.pipelines.pipeline import Factory, Run
from rankline.retrieval.types import Hit, Query

JOURNAL_VERSION = 1


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


def journal_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


def fingerprint(requests: Sequence[tuple[Query, Sequence[Hit]]], settings: Mapping[str, object]) -> str:
    """A digest of the inputs and of the settings that change the output: a journal written for
    other inputs is never resumed."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for query, hits in requests:
        digest.update(json.dumps([query.qid, query.text, [[h.docid, h.text, h.title] for h in hits]]).encode())
    return digest.hexdigest()


def read_journal(path: Path, expected: str) -> tuple[dict[str, list[tuple[str, float]]], int]:
    """Finished queries of an earlier run and the byte length of the journal's complete lines (a
    last line cut short by a crash is ignored, and later cut off)."""
    if not path.exists():
        return {}, 0
    data = path.read_bytes()
    done: dict[str, list[tuple[str, float]]] = {}
    valid = 0
    for line_no, line in enumerate(data.split(b"\n"), 1):
        if valid + len(line) == len(data):  # no newline after it: the write a crash interrupted
            break
        try:
            record = json.loads(line)
            if line_no == 1:
                if record.get("fingerprint") != expected:
                    raise ValueError(f"{path}: journal of a job with other inputs or settings; delete it to start over")
            else:
                done[record["qid"]] = [(docid, float(score)) for docid, score in record["hits"]]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise FormatError(path, line_no, "expected a JSON object {'qid', 'hits'} per line") from None
        valid += len(line) + 1
    return done, valid


class _Journal:
    """Appends finished queries, each line flushed and fsynced before the next is accepted."""

    def __init__(self, path: Path, fp: str, valid: int):
        self.fh = open(path, "ab")
        self.fh.truncate(valid)
        if valid == 0:
            self._write({"rankline_batch": JOURNAL_VERSION, "fingerprint": fp})

    def _write(self, record: dict) -> None:
        self.fh.write(json.dumps(record).encode() + b"\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def add(self, qid: str, hits: Sequence[Hit]) -> None:
        self._write({"qid": qid, "hits": [[h.docid, h.score] for h in hits]})

    def close(self) -> None:
        self.fh.close()


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

    out = Path(out)
    qids = [q.qid for q, _ in requests]
    if len(set(qids)) != len(qids):
        raise ValueError("each query may appear only once in a batch job")
    fp = fingerprint(requests, dict(identity or {}))
    path = journal_path(out)
    done, valid = read_journal(path, fp)
    todo = [(q, list(hits)) for q, hits in requests if q.qid not in done]
    resumed = len(requests) - len(todo)
    out.parent.mkdir(parents=True, exist_ok=True)
    journal = _Journal(path, fp, valid)
    try:
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
            bar = tqdm(total=len(requests), initial=resumed, unit="query", disable=not settings.progress,
                       desc="batch-rerank")
            try:
                while pool.has_next():
                    for qid, hits in pool.get_next_unordered():
                        journal.add(qid, hits)
                        done[qid] = [(h.docid, h.score) for h in hits]
                        bar.update(1)
                        if on_query_done is not None:
                            on_query_done(qid)
            finally:
                bar.close()
                for actor in actors:
                    ray.kill(actor, no_restart=True)
        run: Run = {qid: dict(done[qid]) for qid in qids}
        write_run(out, run, tag=tag)
    finally:
        journal.close()
    path.unlink()
    return BatchReport(len(requests), resumed, len(todo), out)
