"""Sharded search across Ray nodes (issue 17): a three-node ray.cluster_utils.Cluster on one machine,
each node with one `shard_host` custom resource, places one shard actor per node, and the merged
results equal the unsharded FAISS flat index's (integer vectors: FAISS's sums are exact; trec_eval
order). A Cluster cannot share a process with the session's Ray (one ray.init per process), so this
module runs it in a child process (sharded_cluster_run.py) and checks what it prints."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rankline.formats import trec_order
from rankline.retrieval.sharding import write_vector_index

from .conftest import HERE

pytestmark = pytest.mark.ray


def test_three_nodes_one_shard_each_same_results(tmp_path):
    import faiss

    rng = np.random.default_rng(0)
    vectors = rng.integers(-2, 3, size=(90, 8)).astype(np.float32)
    vectors[rng.choice(90, 10, replace=False)] = vectors[4]  # ties across the shards
    docids = [f"doc{i:03d}" for i in rng.permutation(90)]
    write_vector_index(tmp_path / "index", vectors, docids, shard_size=7)
    queries = rng.integers(-2, 3, size=(6, 8)).astype(np.float32)
    queries[0] = vectors[4]
    np.save(tmp_path / "queries.npy", queries)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    proc = subprocess.run([sys.executable, str(HERE / "sharded_cluster_run.py"), str(tmp_path / "index"),
                           str(tmp_path / "queries.npy"), "12"], capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["nodes"]) == 3
    assert sorted(out["shard_nodes"]) == sorted(out["nodes"])  # one shard per node
    assert out["node_addresses"] == ["127.0.0.1"]
    index = faiss.IndexFlatIP(8)
    index.add(vectors)
    scores, ids = index.search(queries, 90)
    for (got_ids, got_scores), row_scores, row_ids in zip(out["results"], scores, ids):
        order = trec_order([docids[i] for i in row_ids], row_scores)[:12]
        assert got_ids == [docids[row_ids[i]] for i in order]
        assert got_scores == row_scores[order].tolist()
