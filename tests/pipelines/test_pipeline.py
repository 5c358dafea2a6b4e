"""The pipeline builder: hand-computed rankings in-process, and identical results on Ray actors."""
from __future__ import annotations

import pytest

from rankline.pipelines.pipeline import Factory, Pipeline, rerank_head
from rankline.retrieval.types import Hit, Query

TOPICS = {"q1": "ray actors python", "q2": "documents query ranks", "q3": "vectors", "q4": "nothing matches"}


def test_retrieve_only_hand_computed(toy):
    pipe = Pipeline.builder().retrieve(toy.KeywordRetriever(), k=3).build()
    # "ray actors python": d7 has all three words, d2 has ray+actors, d1 has ray+python.
    assert [(h.docid, h.score) for h in pipe.search("ray actors python", k=3)] == [("d7", 3.0), ("d1", 2.0), ("d2", 2.0)]
    assert pipe.run(TOPICS)["q4"] == {}


def test_rerank_head_keeps_tail_order_below_head(toy):
    hits = [Hit(f"d{i}", 10.0 - i, "x" * (10 - i)) for i in range(5)]  # d4 is the shortest text
    (out,) = rerank_head(toy.ShortestFirstReranker(), [Query("q", "t")], [hits], depth=3)
    # head d0..d2 reordered shortest first (d2, d1, d0) with scores 3, 2, 1; tail d3, d4 shifted
    # so d3 sits 1 below the head's last score, gap kept: 0.0, -1.0.
    assert [(h.docid, h.score) for h in out] == [("d2", 3.0), ("d1", 2.0), ("d0", 1.0), ("d3", 0.0), ("d4", -1.0)]


def test_rerank_head_tied_tail_scores_become_rank_based(toy):
    hits = [Hit("a", 5.0, "aaa"), Hit("b", 1.0, "b"), Hit("c", 1.0, "c")]
    (out,) = rerank_head(toy.ShortestFirstReranker(), [Query("q", "t")], [hits], depth=1)
    assert [(h.docid, h.score) for h in out] == [("a", 1.0), ("b", 0.0), ("c", -1.0)]


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
