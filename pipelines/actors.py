"""The executor on Ray: one retriever actor and an ActorPool of reranker actors, each a copy of the
same `Executor`.

Each actor builds the stage it runs from the stage's object or Factory, so a restarted actor (Ray
restarts a dead one up to `max_restarts` times and retries its in-flight calls) rebuilds the same
stage and answers the same way.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from rankline.formats import Candidates, Hit, Query
from rankline.pipelines.executor import Executor, top

# Environment of a Ray instance we start (its processes inherit it): no usage stats; and Serve's
# HTTP proxy gets 60 s instead of 5 s to report ready, since on a busy 2-core machine it can take
# longer than that to start and Serve would kill it and leave the endpoint without a proxy.
LOCAL_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60"}

LOOPBACK = "127.0.0.1"


def set_local_ray_env() -> None:
    for name, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(name, value)


def ensure_ray() -> bool:
    """Connect to the running Ray instance (RAY_ADDRESS, or one this process already joined), or
    start a local one with every listening socket on 127.0.0.1 (`start_local_ray`). True when
    it started one."""
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        set_local_ray_env()
        ray.init(address=address, log_to_driver=False)
        return False
    start_local_ray()
    return True


def start_local_ray(**options: Any) -> None:
    """`ray.init` of a new local Ray instance (never one found running) whose processes listen on 127.0.0.1 only: the GCS
    server, the raylet, the workers' and replicas' gRPC ports, the monitor, the dashboard process
    and its agents (Serve's HTTP proxy binds where `serve.start` says; rankline says 127.0.0.1).
    No dashboard UI, no usage stats. `options` go to `ray.init` (num_cpus=, runtime_env=, ...).

    `_node_ip_address="127.0.0.1"` alone is not enough: ray.init swaps a loopback address for the
    host's external one, and every process then binds that address or all interfaces. It keeps the
    loopback address only when Ray runs as a local-only instance, what
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 asks for (read when ray is imported, so the constant it
    sets is switched too, and both are restored once the processes are started). Ray then passes
    127.0.0.1 to every process it starts, and its gRPC servers bind 127.0.0.1 when given it. One
    server is not given it: a Serve replica's inter-deployment gRPC server, which Serve binds to
    [::]:0; `loopback_grpc_hook`, the instance's worker set-up hook, binds it to 127.0.0.1.
    A SIGTERM that lands while ray.init starts the node stops it at once instead of after Ray's
    30 s drain (RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0 unless set; nothing else can take over a
    one-node instance's work)."""
    import ray

    set_local_ray_env()
    # the job's runtime_env, which Serve gives its applications' replicas too
    runtime_env = {**(options.pop("runtime_env", None) or {}), "worker_process_setup_hook": LOOPBACK_GRPC_HOOK}
    with _local_only_ray():
        ray.init(address="local", _node_ip_address=LOOPBACK, include_dashboard=False, dashboard_host=LOOPBACK,
                 log_to_driver=options.pop("log_to_driver", False), runtime_env=runtime_env, **options)


LOOPBACK_GRPC_HOOK = "rankline.pipelines.actors.loopback_grpc_hook"


def loopback_grpc_hook() -> None:
    """Run in every worker of a Ray started by `start_local_ray`, before any task or actor: a gRPC
    server that Ray's Python code would bind to all interfaces ([::] or 0.0.0.0) binds 127.0.0.1."""
    from ray._common import tls_utils

    bind = tls_utils.add_port_to_grpc_server

    def on_loopback(server: Any, address: str) -> int:
        host, _, port = address.rpartition(":")
        return bind(server, f"{LOOPBACK}:{port}" if host in ("[::]", "0.0.0.0") else address)

    tls_utils.add_port_to_grpc_server = on_loopback  # read when ray.serve._private.replica is imported


@contextmanager
def _local_only_ray() -> Iterator[None]:
    from ray._private import ray_constants

    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    constants = {"ENABLE_RAY_CLUSTER": False}
    if "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S" not in os.environ:
        env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
        constants["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = 0.0
    saved_env = {name: os.environ.get(name) for name in env}
    saved = {name: getattr(ray_constants, name) for name in constants}
    os.environ.update(env)
    for name, value in constants.items():
        setattr(ray_constants, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(ray_constants, name, value)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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
