"""The pipeline builder: hand-computed rankings in-process, and identical results on Ray actors."""
from __future__ import annotations

import pytest

from rankline.pipelines.pipeline import Factory, Pipeline, rerank_head
from rankline.formats import Hit, Query

TOPICS = {"q1": "ray actors python", "q2": "documents query ranks", "q3": "vectors", "q4": "nothing matches"}


def test_retrieve_only_hand_computed(toy):
    pipe = Pipeline.builder().retrieve(toy.KeywordRetriever(), k=3).build()
    # "ray actors python": d7 has all three words, d2 has ray+actors, d1 has ray+python.
    assert [(h.docid, h.score) for h in pipe.search("ray actors python", k=3)] == [("d7", 3.0), ("d1", 2.0), ("d2", 2.0)]
    assert pipe.run(TOPICS)["q4"] == {}


def test_rerank_head_keeps_tail_order_below_head(toy):
    hits = [Hit(f"d{i}", 10.0 - i, "x" * (10 - i)) for i in range(5)]  # d4 is the shortest text
    (out,) = rerank_head(toy.ShortestFirstReranker(), [Query("q", "t")], [hits], depth=3)
    # head d0..d2 reordered shortest first (d2, d1, d0) with the reranker's scores 3, 2, 1; the tail
    # d3, d4 keeps its order and counts down from one below the head: 0, -1.
    assert [(h.docid, h.score) for h in out] == [("d2", 3.0), ("d1", 2.0), ("d0", 1.0), ("d3", 0.0), ("d4", -1.0)]


def test_evaluate_hand_computed(toy):
    pipe = Pipeline().retrieve(toy.KeywordRetriever(), k=3)
    # q1 scores d7 3, d1 2, d2 2; trec_eval breaks the tie by docid descending: d7, d2, d1, so the
    # relevant d1 is at rank 3. q3 retrieves d4 only, relevant, at rank 1.
    qrels = {"q1": {"d1": 1, "d5": 0}, "q3": {"d4": 2}}
    got = pipe.evaluate(qrels, ["RR", "P@2"], queries={"q1": TOPICS["q1"], "q3": TOPICS["q3"]})
    assert got == {"RR": (1 / 3 + 1) / 2, "P@2": (0 + 1 / 2) / 2}


def test_builder_and_fluent_forms_agree(toy):
    built = Pipeline.builder().retrieve(toy.KeywordRetriever(), k=5).rerank(toy.ShortestFirstReranker(), depth=2).build()
    fluent = Pipeline().retrieve(Factory(toy.KeywordRetriever), k=5).rerank(Factory(toy.ShortestFirstReranker), depth=2)
    assert built.run(TOPICS) == fluent.run(TOPICS)
    # q1 top 5 by keywords: d7(3), d1(2), d2(2); reranking the top 2 puts d7 (shorter) first.
    assert [h.docid for h in built.search("ray actors python", k=3)] == ["d7", "d1", "d2"]
    assert list(built.run(TOPICS)["q3"]) == ["d4"]


def test_bad_pipelines_are_rejected(toy):
    with pytest.raises(ValueError, match="retrieve stage"):
        Pipeline().rerank(toy.ShortestFirstReranker()).build()
    with pytest.raises(ValueError, match="does not implement Reranker"):
        Pipeline().retrieve(toy.KeywordRetriever()).rerank(object()).build()
    with pytest.raises(ValueError, match="k must be a positive integer"):
        Pipeline().retrieve(toy.KeywordRetriever(), k=0)


@pytest.mark.ray
def test_on_ray_gives_identical_results(toy, ray_session):
    local = Pipeline.builder().retrieve(toy.KeywordRetriever(), k=6).rerank(toy.ShortestFirstReranker(), depth=3).build()
    remote = local.on_ray(num_replicas=2, chunk_size=1)
    try:
        assert remote.run(TOPICS) == local.run(TOPICS)
        assert remote.search("dense vectors", k=2) == local.search("dense vectors", k=2)
    finally:
        remote.close()


@pytest.mark.ray
def test_on_ray_more_actors_than_the_cluster_holds_fails_at_once(toy, ray_session):
    pipe = Pipeline().retrieve(toy.KeywordRetriever()).rerank(toy.ShortestFirstReranker()).on_ray(num_replicas=10)
    with pytest.raises(ValueError, match="11 actors need 11 CPU in all; this Ray cluster has 4"):
        pipe.run(TOPICS)
