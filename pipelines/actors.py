"""Pipeline stages as Ray actors: one retriever actor and an ActorPool of reranker actors.

Each actor builds its stage from the stage's object or Factory, so a restarted actor (Ray restarts
a dead one up to `max_restarts` times and retries its in-flight calls) rebuilds the same stage and
answers the same way.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from rankline.pipelines.pipeline import RayOptions, RerankStage, RetrieveStage, materialize, rerank_head
from rankline.formats import Hit, Query


class StageActor:
    """Holds one built stage; the methods are what the pipeline and the batch job call remotely."""

    def __init__(self, source: Any):
        self.stage = materialize(source)

    def search_batch(self, queries: Sequence[Query], k: int) -> list[list[Hit]]:
        return self.stage.search_batch(list(queries), k)

    def rerank_head(self, queries: Sequence[Query], hits_lists: Sequence[Sequence[Hit]], depth: int) -> list[list[Hit]]:
        return rerank_head(self.stage, queries, hits_lists, depth)

    def rerank_queries(
        self, queries: Sequence[Query], hits_lists: Sequence[Sequence[Hit]]
    ) -> list[tuple[str, list[Hit]]]:
        """(qid, reranked hits) for each query: the whole candidate list goes to the reranker."""
        return [(q.qid, hits) for q, hits in zip(queries, self.stage.rerank_batch(list(queries), list(hits_lists)))]


# Environment of a Ray instance we start (its processes inherit it): no usage stats; and Serve's
# HTTP proxy gets 60 s instead of 5 s to report ready, since on a busy 2-core machine it can take
# longer than that to start and Serve would kill it and leave the endpoint without a proxy.
LOCAL_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60"}


def set_local_ray_env() -> None:
    for name, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(name, value)


def ensure_ray() -> None:
    """Connect to the running Ray instance, or start a local one bound to 127.0.0.1."""
    import ray

    if not ray.is_initialized():
        set_local_ray_env()
        ray.init(
            address=os.environ.get("RAY_ADDRESS") or None,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
        )


def check_fits(demands: Sequence[Mapping[str, float]]) -> None:
    """Fail at once, naming what is short, when actors asking for `demands` ({"CPU": n, ...} each,
    CPU 1 by default) cannot all be placed on the cluster, instead of waiting on them forever."""
    import ray

    need: dict[str, float] = {}
    for demand in demands:
        for name, amount in {"CPU": 1, **demand}.items():
            need[name] = need.get(name, 0.0) + amount
    have = ray.cluster_resources()
    for name, amount in need.items():
        if amount > have.get(name, 0.0):
            raise ValueError(f"{len(demands)} actors need {amount:g} {name} in all; this Ray cluster has "
                             f"{have.get(name, 0.0):g} (use fewer replicas/workers or smaller per-actor resources)")


def ray_resources(resources: Mapping[str, float]) -> dict[str, Any]:
    """Ray actor options from {"CPU": n, "GPU": n, "<custom>": n} (CPU defaults to 1, GPU to 0)."""
    res = dict(resources)
    opts: dict[str, Any] = {"num_cpus": res.pop("CPU", 1), "num_gpus": res.pop("GPU", 0)}
    if res:
        opts["resources"] = res
    return opts


def actor_options(resources: Mapping[str, float], max_restarts: int) -> dict:
    """Options of a stage actor: its resources, and restarts after a crash that re-run the calls
    it held (max_task_retries)."""
    return {**ray_resources(resources), "max_restarts": max_restarts, "max_task_retries": max_restarts}


class RayRunner:
    """Runs a pipeline's stages as actors; query chunks flow retriever -> reranker pool without
    passing through the driver (the reranker receives the retriever's ObjectRef)."""

    def __init__(self, retrieve: RetrieveStage, rerank: RerankStage | None, opts: RayOptions):
        import ray
        from ray.util import ActorPool

        ensure_ray()
        demands = [{"CPU": 1}] + ([dict(opts.resources)] * opts.num_replicas if rerank is not None else [])
        check_fits(demands)
        remote = ray.remote(StageActor)
        self.opts = opts
        self.retriever = remote.options(**actor_options(demands[0], opts.max_restarts)).remote(retrieve.source)
        self.rerankers = []
        self.pool = None
        self.depth = rerank.depth if rerank else 0
        if rerank is not None:
            options = actor_options(opts.resources, opts.max_restarts)
            self.rerankers = [remote.options(**options).remote(rerank.source) for _ in range(opts.num_replicas)]
            self.pool = ActorPool(self.rerankers)

    def rank_batch(self, queries: Sequence[Query], k: int) -> list[list[Hit]]:
        import ray

        queries = list(queries)
        size = self.opts.chunk_size
        chunks = [queries[i : i + size] for i in range(0, len(queries), size)]
        hit_refs = [self.retriever.search_batch.remote(chunk, k) for chunk in chunks]
        if self.pool is None:
            parts = ray.get(hit_refs)
        else:
            depth = self.depth
            parts = list(
                self.pool.map(lambda actor, job: actor.rerank_head.remote(job[0], job[1], depth), zip(chunks, hit_refs))
            )
        return [hits for part in parts for hits in part]

    def close(self) -> None:
        import ray

        for actor in [self.retriever, *self.rerankers]:
            ray.kill(actor, no_restart=True)
        self.rerankers, self.pool = [], None
