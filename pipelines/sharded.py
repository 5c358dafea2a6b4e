"""Sharded dense retrieval on Ray for pipelines: `rankline.retrieval.sharding`'s retriever with one Ray
actor per shard, on the running Ray or a local one started as rankline starts it (every socket on
127.0.0.1), after checking that the cluster can place every shard actor.

    retriever = open_sharded_on_ray("indexes/scifact", shards=4, resources={"CPU": 1, "shard_host": 1})
    Pipeline.builder().retrieve(Factory(open_sharded_on_ray, ("indexes/scifact", 4))).build().on_ray()

In a pipeline file: `retriever: {index: DIR, shards: 4, shard_resources: {CPU: 1, shard_host: 1}}`.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from rankline.pipelines.actors import check_fits, ensure_ray


def open_sharded_on_ray(index_dir: str | os.PathLike, shards: int, *,
                        resources: Mapping[str, float] | Sequence[Mapping[str, float]] | None = None,
                        max_restarts: int = 3, **options: Any):
    """`open_sharded_retriever(index_dir, shards, placement="ray")` with each shard actor asking for
    `resources` ({"CPU": n, "<custom>": n}; CPU 1 by default; one mapping for all shards or one per
    shard). Fails at once, naming what is short, when the cluster cannot place them all. `options`:
    wait_for_restart (False behind Serve: see PipelineConfig.served), encoder, device, batch_size, with_text, nprobe (an IVF-PQ index's probed lists)."""
    from rankline.retrieval.sharding import open_sharded_retriever, shard_ranges

    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        shard_ranges(1, shards)  # the one error for a bad shard count
    per_shard = [dict(resources or {})] * shards if resources is None or isinstance(resources, Mapping) else [dict(r) for r in resources]
    if len(per_shard) != shards:
        raise ValueError(f"shard resources: give one mapping for every shard or one per shard ({shards}), got {len(per_shard)}")
    if len({r.get("CPU", 1) for r in per_shard}) > 1:
        raise ValueError("shard resources: every shard asks for the same number of CPUs")
    if any("GPU" in r for r in per_shard):
        raise ValueError("shard resources: shards search on CPUs (a GPU per shard is not supported yet)")
    ensure_ray()
    check_fits(per_shard)
    num_cpus = per_shard[0].get("CPU", 1) if per_shard else 1
    custom = [{k: v for k, v in r.items() if k != "CPU"} for r in per_shard]
    return open_sharded_retriever(index_dir, shards, placement="ray", num_cpus=num_cpus, resources=custom,
                                  max_restarts=max_restarts, **options)
