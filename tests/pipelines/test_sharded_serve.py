"""Sharded search that does not wait for restarts (what the search service asks for, issue 17): a
shard whose actor died fails the search at once with ShardUnavailableError naming it, while Ray
restarts it, and once restarted the search returns the unsharded results again; a shard out of
restarts fails it for good. (The Serve answer, 503 with Retry-After, is in test_serve.py.)"""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from rankline.retrieval.sharding import RayShards, ShardedDenseRetriever, ShardUnavailableError, shard_ranges

from .conftest import load_stages

pytestmark = pytest.mark.ray

stages = load_stages("sharded_stages.py")


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_dead_shard_fails_the_search_at_once_until_it_is_restarted(ray_session, tmp_path):
    vectors, docids = stages.tiny_index(tmp_path / "index")
    queries = np.random.default_rng(1).integers(-2, 3, size=(4, stages.DIM)).astype(np.float32)
    want = stages.unsharded(vectors, docids, queries, 5)
    shards = RayShards(str(tmp_path / "index"), shard_ranges(60, 2), num_cpus=0.25, max_restarts=1, wait_for_restart=False)
    try:
        retriever = ShardedDenseRetriever(shards)
        pid = retriever.info()[1]["pid"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not _gone(pid):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(ShardUnavailableError, match=r"shard 2 of 2 \(rows 30\.\.59 of .*\) is unavailable \(its actor "
                           r"died and Ray is restarting it\); no partial results"):
            retriever.search_vectors(queries, 5)
        deadline = time.monotonic() + 60
        while True:  # Ray restarts the actor, which reloads its shard
            try:
                got = retriever.search_vectors(queries, 5)
                break
            except ShardUnavailableError:
                assert time.monotonic() < deadline, "the shard was not restarted"
                time.sleep(0.3)
        assert [(ids, scores.tolist()) for ids, scores in got] == want
        assert retriever.info()[1]["pid"] != pid
        ray_session.kill(shards.actors[0], no_restart=True)  # dead for good
        with pytest.raises(ShardUnavailableError, match=r"shard 1 of 2 .* out of restarts"):
            retriever.search_vectors(queries, 5)
    finally:
        shards.close()
