"""The pipeline builder and its executor: hand-computed rankings in-process, and identical results on
Ray actors."""
from __future__ import annotations

import pickle

import pytest

from rankline.formats import Candidates, Hit, Query
from rankline.pipelines.executor import Executor, Factory, RerankStage, RetrieveStage
from rankline.pipelines.pipeline import Pipeline
from rankline.rerankers import DEFAULT_DEPTH

TOPICS = {"q1": "ray actors python", "q2": "documents query ranks", "q3": "vectors", "q4": "nothing matches"}
# "documents query ranks" by keywords: d6 (3 words), d3 (2), d4, d5, d8 (1 each, docid order). Its top 3
# reranked shortest text first: d4 (58 characters), d6 (61), d3 (69), scored 3, 2, 1; the tail d5, d8
# keeps its order below them, counting down from 0.
RERANKED_Q2 = [("d4", 3.0), ("d6", 2.0), ("d3", 1.0), ("d5", 0.0), ("d8", -1.0)]


def test_retrieve_only_hand_computed(toy):
    pipe = Pipeline.builder().retrieve(toy.KeywordRetriever(), k=3).build()
    # "ray actors python": d7 has all three words, d2 has ray+actors, d1 has ray+python.
    assert [(h.docid, h.score) for h in pipe.search("ray actors python", k=3)] == [("d7", 3.0), ("d1", 2.0), ("d2", 2.0)]
    assert pipe.run(TOPICS)["q4"] == {}


def test_executor_reranks_the_head_and_keeps_the_tail_below(toy):
    hits = tuple(Hit(f"d{i}", 10.0 - i, "x" * (10 - i)) for i in range(5))  # d4 is the shortest text
    (out,) = Executor(rerank=RerankStage(toy.ShortestFirstReranker(), depth=3)).rerank([Candidates(Query("q", "t"), hits)])
    # head d0..d2 reordered shortest first (d2, d1, d0) with the reranker's scores 3, 2, 1; the tail
    # d3, d4 keeps its order and counts down from one below the head: 0, -1.
    assert out.query == Query("q", "t")
    assert [(h.docid, h.score) for h in out.hits] == [("d2", 3.0), ("d1", 2.0), ("d0", 1.0), ("d3", 0.0), ("d4", -1.0)]


def test_a_request_for_k_hits_retrieves_at_least_the_stage_k(toy):
    log = []

    class Logged(toy.KeywordRetriever):
        def search_batch(self, queries, k):
            log.append(k)
            return super().search_batch(queries, k)

    executor = Executor(RetrieveStage(Logged(), k=2))
    q = Query("q2", TOPICS["q2"])
    assert [len(c.hits) for c in executor.retrieve([q, q, q], [1, 2, 4])] == [2, 2, 4]  # max(k, 2) each
    assert log == [4]  # one search_batch call for the whole batch
    assert [[h.docid for h in hits] for hits in executor.rank([q], 1)] == [["d6"]]
    assert executor.retrieve([], 3) == []


def test_copies_carry_sources_not_built_stages(toy):
    executor = Executor(RetrieveStage(Factory(toy.KeywordRetriever), k=3))
    executor.rank([Query("q", "ray")], 3)
    assert executor._retriever is not None
    copy = pickle.loads(pickle.dumps(executor))
    assert copy._retriever is None and copy.retrieve_stage == executor.retrieve_stage


def test_evaluate_hand_computed(toy):
    pipe = Pipeline().retrieve(toy.KeywordRetriever(), k=3)
    # q1 scores d7 3, d1 2, d2 2; trec_eval breaks the tie by docid descending: d7, d2, d1, so the
    # relevant d1 is at rank 3. q3 retrieves d4 only, relevant, at rank 1.
    qrels = {"q1": {"d1": 1, "d5": 0}, "q3": {"d4": 2}}
    got = pipe.evaluate(qrels, ["RR", "P@2"], queries={"q1": TOPICS["q1"], "q3": TOPICS["q3"]})
    assert got == {"RR": (1 / 3 + 1) / 2, "P@2": (0 + 1 / 2) / 2}


def test_builder_and_fluent_forms_agree(toy):
    built = Pipeline.builder().retrieve(toy.KeywordRetriever(), k=5).rerank(toy.ShortestFirstReranker(), depth=3).build()
    fluent = Pipeline().retrieve(Factory(toy.KeywordRetriever), k=5).rerank(Factory(toy.ShortestFirstReranker), depth=3)
    assert built.run(TOPICS) == fluent.run(TOPICS)
    assert list(built.run(TOPICS)["q2"].items()) == RERANKED_Q2
    assert [(h.docid, h.score) for h in built.search(TOPICS["q2"], k=4)] == RERANKED_Q2[:4]
    # "ray actors python" retrieves d7, d1, d2; shortest first puts d2 (35 characters) above d1 (43)
    assert [h.docid for h in fluent.search(TOPICS["q1"], k=3)] == ["d7", "d2", "d1"]
    assert list(built.run(TOPICS)["q3"]) == ["d4"]


def test_depth_defaults_to_the_one_default(toy):
    assert Pipeline().retrieve(toy.KeywordRetriever()).rerank(toy.ShortestFirstReranker()).rerank_stage.depth == DEFAULT_DEPTH


def test_bad_pipelines_are_rejected(toy):
    with pytest.raises(ValueError, match="retrieve stage"):
        Pipeline().rerank(toy.ShortestFirstReranker()).build()
    with pytest.raises(ValueError, match="does not implement Reranker"):
        Pipeline().retrieve(toy.KeywordRetriever()).rerank(object()).build()
    with pytest.raises(ValueError, match="k must be a positive integer"):
        Pipeline().retrieve(toy.KeywordRetriever(), k=0)
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        Pipeline().retrieve(toy.KeywordRetriever()).rerank(toy.ShortestFirstReranker(), depth=0)


@pytest.mark.ray
def test_on_ray_gives_identical_results(toy, ray_session):
    local = Pipeline.builder().retrieve(toy.KeywordRetriever(), k=6).rerank(toy.ShortestFirstReranker(), depth=3).build()
    remote = local.on_ray(num_replicas=2, queries_per_task=1)
    try:
        assert remote.run(TOPICS) == local.run(TOPICS)
        assert list(remote.run(TOPICS)["q2"].items()) == RERANKED_Q2
        assert remote.search("dense vectors", k=2) == local.search("dense vectors", k=2)
    finally:
        remote.close()


@pytest.mark.ray
def test_on_ray_more_actors_than_the_cluster_holds_fails_at_once(toy, ray_session):
    pipe = Pipeline().retrieve(toy.KeywordRetriever()).rerank(toy.ShortestFirstReranker()).on_ray(num_replicas=10)
    with pytest.raises(ValueError, match="11 actors need 11 CPU in all; this Ray cluster has 4"):
        pipe.run(TOPICS)
