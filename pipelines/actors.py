"""The executor on Ray: one retriever actor and an ActorPool of reranker actors, each a copy of the
same `Executor`.

Each actor builds the stage it runs from the stage's object or Factory, so a restarted actor (Ray
restarts a dead one up to `max_restarts` times and retries its in-flight calls) rebuilds the same
stage and answers the same way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from rankline.formats import Candidates, Hit, Query
from rankline.pipelines.executor import Executor, top

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


@dataclass(frozen=True)
class RayOptions:
    """How the executor is placed on Ray: `num_replicas` reranker actors, each asking for `resources`
    ({"CPU": 1, "GPU": 0.5, "<custom>": n}); `rank` sends them `queries_per_task` queries per call;
    a crashed actor is restarted up to `max_restarts` times and its calls re-run."""

    num_replicas: int = 1
    resources: Mapping[str, float] = field(default_factory=dict)
    queries_per_task: int = 8
    max_restarts: int = 3


class RayExecutor:
    """`executor`'s stages as actors, started on first use: a retriever actor (when there is a
    retrieve stage) and a pool of reranker actors. Query chunks flow retriever -> reranker pool without
    passing through the driver (a reranker receives the retriever's ObjectRef)."""

    def __init__(self, executor: Executor, opts: RayOptions):
        self.executor, self.opts = executor, opts
        self.retriever: Any = None
        self.rerankers: list = []

    def _start(self, rerankers: int) -> None:
        if self.retriever is not None or self.rerankers:
            return
        import ray

        ensure_ray()
        retriever = [{"CPU": 1}] if self.executor.retrieve_stage is not None else []
        rerankers = rerankers if self.executor.rerank_stage is not None else 0
        check_fits(retriever + [dict(self.opts.resources)] * rerankers)
        remote = ray.remote(Executor)
        if retriever:
            self.retriever = remote.options(**self._actor_options(retriever[0])).remote(*self._stages())
        options = self._actor_options(self.opts.resources)
        self.rerankers = [remote.options(**options).remote(*self._stages()) for _ in range(rerankers)]

    def _stages(self) -> tuple:
        return self.executor.retrieve_stage, self.executor.rerank_stage

    def _actor_options(self, resources: Mapping[str, float]) -> dict[str, Any]:
        """An actor's resources, and restarts after a crash that re-run the calls it held."""
        restarts = self.opts.max_restarts
        return {**ray_resources(resources), "max_restarts": restarts, "max_task_retries": restarts}

    def rank(self, queries: Sequence[Query], k: int) -> list[list[Hit]]:
        """Executor.rank, `queries_per_task` queries per actor call, in query order."""
        import ray
        from ray.util import ActorPool

        self._start(self.opts.num_replicas)
        size = self.opts.queries_per_task
        refs = [self.retriever.retrieve.remote(queries[i : i + size], k) for i in range(0, len(queries), size)]
        if self.rerankers:
            parts = ActorPool(self.rerankers).map(lambda actor, ref: actor.rerank.remote(ref), refs)
        else:
            parts = ray.get(refs)
        return top([c for part in parts for c in part], k)

    def rerank_tasks(self, lists: Sequence[Candidates], queries_per_task: int) -> Iterator[list[Candidates]]:
        """Executor.rerank_tasks over the pool (at most one actor per task), tasks as they finish."""
        from ray.util import ActorPool

        tasks = [lists[i : i + queries_per_task] for i in range(0, len(lists), queries_per_task)]
        if not tasks:
            return
        self._start(min(self.opts.num_replicas, len(tasks)))
        pool = ActorPool(self.rerankers)
        for task in tasks:
            pool.submit(lambda actor, task: actor.rerank.remote(task), task)
        while pool.has_next():
            yield pool.get_next_unordered()

    def close(self) -> None:
        """Kill the actors (started again on the next use)."""
        actors = [a for a in [self.retriever, *self.rerankers] if a is not None]
        if actors:
            import ray

            for actor in actors:
                ray.kill(actor, no_restart=True)
        self.retriever, self.rerankers = None, []
