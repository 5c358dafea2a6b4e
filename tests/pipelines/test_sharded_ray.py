"""Sharded exact dense search on Ray (issue 17): one actor per shard returns exactly what the
unsharded FAISS flat index returns (integer vectors, so FAISS's float32 sums are exact; ranked in
trec_eval order); a crashed shard actor is restarted and answers the same; a shard that stays dead
fails the search with an error naming it, never partial results; a damaged shard file is refused
naming it; a pipeline on Ray (and a pipeline file's `retriever.shards`) serves the shards."""
from __future__ import annotations


import numpy as np
import pytest

from rankline.formats import Query
from rankline.pipelines.executor import Factory
from rankline.pipelines.pipeline import Pipeline
from rankline.retrieval.sharding import RayShards, ShardedDenseRetriever, ShardUnavailableError, shard_ranges

from .conftest import load_stages

pytestmark = pytest.mark.ray

sharded = load_stages("sharded_stages.py")  # the tiny index and its unsharded oracle


@pytest.fixture(scope="module")
def stages(ray_session):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sharded)
    return sharded


def _plain(results):
    return [(ids, scores.tolist()) for ids, scores in results]


def test_shard_actors_return_the_unsharded_results_and_survive_a_crash(ray_session, tmp_path):
    vectors, docids = sharded.tiny_index(tmp_path / "index")
    queries = np.random.default_rng(1).integers(-2, 3, size=(7, 6)).astype(np.float32)
    queries[0] = vectors[1]
    shards = RayShards(str(tmp_path / "index"), shard_ranges(60, 3), num_cpus=0.25, max_restarts=1)
    try:
        retriever = ShardedDenseRetriever(shards)
        info = retriever.info()
        assert [i["rows"] for i in info] == [20, 20, 20] and len({i["pid"] for i in info}) == 3
        assert all(i["bytes"] == 20 * 6 * 4 for i in info)
        for k in (5, 25):  # 25: more than a shard holds
            assert _plain(retriever.search_vectors(queries, k)) == sharded.unsharded(vectors, docids, queries, k)
        ray_session.kill(shards.actors[1], no_restart=False)  # a crash: Ray restarts the actor, which reloads its shard
        assert _plain(retriever.search_vectors(queries, 5)) == sharded.unsharded(vectors, docids, queries, 5)
        assert retriever.info()[1]["pid"] != info[1]["pid"]
        ray_session.kill(shards.actors[2], no_restart=True)  # dead for good
        with pytest.raises(ShardUnavailableError, match=r"shard 3 of 3 \(rows 40\.\.59 of .*\) is unavailable.*no partial results"):
            retriever.search_vectors(queries, 5)
    finally:
        shards.close()


def test_a_damaged_shard_file_is_refused_naming_it(ray_session, tmp_path):
    sharded.tiny_index(tmp_path / "index")
    target = tmp_path / "index" / "dense-shards" / "000000000036.npy"  # rows 36..44: only shard 2 reads it
    target.write_bytes(target.read_bytes()[:-4] + b"\0\0\0\1")
    with pytest.raises(ValueError, match=rf"shard 2 of 2 \(rows 30\.\.59 .*\) cannot start: {target}: checksum mismatch"):
        RayShards(str(tmp_path / "index"), shard_ranges(60, 2), num_cpus=0.25, max_restarts=0)


def test_shards_that_cannot_be_placed_fail_clearly(ray_session, tmp_path):
    from rankline.pipelines.sharded import open_sharded_on_ray

    sharded.tiny_index(tmp_path / "index")
    with pytest.raises(ValueError, match="2 actors need 2 shard_host in all; this Ray cluster has 0"):
        open_sharded_on_ray(tmp_path / "index", 2, resources={"CPU": 0.25, "shard_host": 1})
    with pytest.raises(ShardUnavailableError, match="did not start within 1 s"):
        RayShards(str(tmp_path / "index"), shard_ranges(60, 2), num_cpus=0.25, resources={"shard_host": 1}, start_timeout_s=1)


def test_pipeline_on_ray_and_pipeline_file_serve_the_shards(ray_session, stages, tmp_path):
    from rankline.pipelines.config import load_config

    vectors, docids = sharded.tiny_index(tmp_path / "index")
    topics = {"q1": "red apples", "q2": "lemon juice vitamin", "q3": "lazy dog jumps"}
    queries = np.stack([stages.text_vector(t) for t in topics.values()])
    want = {qid: dict(zip(ids, scores)) for qid, (ids, scores) in zip(topics, sharded.unsharded(vectors, docids, queries, 10))}
    factory = Factory(stages.HashedQueries, (str(tmp_path / "index"), 2), {"placement": "ray", "num_cpus": 0.25})
    remote = Pipeline.builder().retrieve(factory, k=10).build().on_ray()
    try:
        assert remote.run(topics) == want  # the retriever actor opens its own shard actors
    finally:
        remote.close()
    path = tmp_path / "pipe.yaml"
    path.write_text("retriever:\n  index: index\n  k: 10\n  shards: 2\n  shard_resources: {CPU: 0.25}\n")
    config = load_config(path)
    assert config.retriever.args == (str(tmp_path / "index"), 2) and config.retriever.kwargs == {"resources": {"CPU": 0.25}}
    retriever = config.retriever.build()
    try:
        assert len({i["pid"] for i in retriever.info()}) == 2
        assert _plain(retriever.search_vectors(queries, 10)) == [(list(w), list(w.values())) for w in want.values()]
        with pytest.raises(ValueError, match="without an encoder"):
            retriever.search_batch([Query("q", "x")], 3)
    finally:
        retriever.close()


@pytest.mark.parametrize("text, message", [
    ("  shards: 0\n", "retriever.shards must be a positive integer, got 0"),
    ("  shards: 2\n  method: bm25\n", "retriever.shards serves a dense index; method is 'bm25'"),
    ("  shards: 2\n  shard_resources: [1]\n", "retriever.shard_resources must map resource names to amounts"),
    ("  shards: 2\n  options: {ef_search: 3}\n", "unknown key retriever.options.'ef_search'"),  # HNSW's: shards are flat or IVF-PQ
])
def test_pipeline_file_shard_keys_are_checked(tmp_path, text, message):
    from rankline.pipelines.config import load_config

    sharded.tiny_index(tmp_path / "index")
    path = tmp_path / "pipe.yaml"
    path.write_text("retriever:\n  index: index\n" + text)
    with pytest.raises(ValueError, match=f"{path}: " + message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_config(path)
