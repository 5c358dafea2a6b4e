"""Run by test_sharded_cluster.py in its own process (a ray.cluster_utils.Cluster cannot share a
process with the test session's Ray): a three-node Ray cluster on 127.0.0.1, each node with one
`shard_host` resource, serving a vector index folder as three shards that each ask for one
`shard_host`. Prints one JSON line: the node of each shard actor, the cluster's nodes, and the
sharded results. Usage: python sharded_cluster_run.py INDEX_DIR QUERIES.npy K"""
from __future__ import annotations

import json
import os
import sys

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every node on 127.0.0.1 (read when ray is imported)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from rankline.retrieval.sharding import RayShards, ShardedDenseRetriever, shard_ranges  # noqa: E402
from rankline.retrieval.retrievers import open_index  # noqa: E402


def main(index_dir: str, queries_path: str, k: int) -> None:
    node = {"num_cpus": 1, "resources": {"shard_host": 1}, "node_ip_address": "127.0.0.1", "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=node)
    try:
        for _ in range(2):
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        cluster.connect()
        ranges = shard_ranges(open_index(index_dir, verify=False).count, 3)
        shards = RayShards(index_dir, ranges, num_cpus=0.5, resources={"shard_host": 1}, start_timeout_s=120)
        results = ShardedDenseRetriever(shards).search_vectors(np.load(queries_path), k)
        print(json.dumps({"shard_nodes": [i["node_id"] for i in shards.info()],
                          "nodes": [n["NodeID"] for n in ray.nodes() if n["Alive"]],
                          "node_addresses": sorted({n["NodeManagerAddress"] for n in ray.nodes()}),
                          "results": [[ids, scores.tolist()] for ids, scores in results]}))
        shards.close()
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
