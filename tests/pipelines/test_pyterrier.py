"""rankline stages inside PyTerrier: a PyTerrier pipeline of rankline stages returns the run rankline's own
Pipeline returns (toy stages, and FIRST on the tiny random Llama), and a PyTerrier first stage that does
or does not supply `text`."""
from __future__ import annotations

import pyterrier as pt
import pytest

from rankline.formats import Query
from rankline.formats.pyterrier import frame_run, topics_frame
from rankline.pipelines.pipeline import Pipeline
from rankline.rerankers.base import PyTerrierReranker
from rankline.retrieval.base import PyTerrierRetriever

TOPICS = {"q1": "ray actors python", "q2": "documents query ranks", "q3": "vectors", "q4": "nothing matches",
          "q5": "documents with ranks and scores per query"}


@pytest.fixture(scope="module")
def stages(toy):
    """The toy stages with `.as_pyterrier()`, as rankline's retrievers and rerankers have it."""

    class Retriever(toy.KeywordRetriever, PyTerrierRetriever):
        pass

    class Reranker(toy.ShortestFirstReranker, PyTerrierReranker):
        pass

    return Retriever(), Reranker()


@pytest.mark.parametrize("k", [1, 3, 9])
def test_cut_then_rerank_equals_the_pipeline(stages, k):
    retriever, reranker = stages
    pt_run = frame_run((retriever.as_pyterrier() % k >> reranker.as_pyterrier())(topics_frame(TOPICS)))
    own = Pipeline.builder().retrieve(retriever, k=k).rerank(reranker, depth=k).run(TOPICS)
    assert pt_run == {qid: docs for qid, docs in own.items() if docs}  # PyTerrier has no rows for q4


def test_depth_reranks_the_head_as_the_pipeline_does(stages):
    retriever, reranker = stages
    out = (retriever.as_pyterrier(k=5) >> reranker.as_pyterrier(depth=2))(topics_frame(TOPICS))
    own = Pipeline.builder().retrieve(retriever, k=5).rerank(reranker, depth=2).run(TOPICS)
    assert frame_run(out) == {qid: docs for qid, docs in own.items() if docs}
    # PyTerrier's conventions: each query's rows by descending score, ranked 0, 1, 2, ...; queries in input order.
    assert list(dict.fromkeys(out["qid"])) == ["q1", "q2", "q3", "q5"]
    for _, rows in out.groupby("qid", sort=False):
        assert rows["rank"].tolist() == list(range(len(rows)))
        assert rows["score"].is_monotonic_decreasing
    assert {"query", "text", "title"} <= set(out.columns)


def test_pipeline_as_pyterrier_equals_its_run(stages):
    retriever, reranker = stages
    pipe = Pipeline.builder().retrieve(retriever, k=4).rerank(reranker, depth=3).build()
    out = pipe.as_pyterrier()(topics_frame(TOPICS))
    assert frame_run(out) == {qid: docs for qid, docs in pipe.run(TOPICS).items() if docs}
    assert pipe.as_pyterrier().search("ray actors python")["docno"].tolist() == [h.docid for h in pipe.search(
        "ray actors python", k=4)]


def test_a_pyterrier_first_stage_with_text_feeds_a_rankline_reranker(stages):
    retriever, reranker = stages
    first = retriever.as_pyterrier(k=6)(topics_frame(TOPICS))
    first = first.assign(extra=range(len(first)))  # a column rankline does not know passes through
    out = (pt.Transformer.from_df(first) >> reranker.as_pyterrier())(topics_frame(TOPICS))
    own = Pipeline.builder().retrieve(retriever, k=6).rerank(reranker, depth=6).run(TOPICS)
    assert frame_run(out) == {qid: docs for qid, docs in own.items() if docs}
    assert out.set_index(["qid", "docno"])["extra"].to_dict() == first.set_index(["qid", "docno"])["extra"].to_dict()


def test_a_first_stage_without_text_is_one_clear_error(stages):
    retriever, reranker = stages
    no_text = retriever.as_pyterrier(k=3)(topics_frame(TOPICS)).drop(columns=["text"])
    with pytest.raises(ValueError, match=r"Reranker.as_pyterrier\(\) needs the column 'text' in its input.*get_text"):
        (pt.Transformer.from_df(no_text) >> reranker.as_pyterrier())(topics_frame(TOPICS))


def test_bad_arguments_and_inputs(stages):
    retriever, reranker = stages
    with pytest.raises(ValueError, match="k must be a positive integer"):
        retriever.as_pyterrier(k=0)
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        reranker.as_pyterrier(depth=0)
    with pytest.raises(ValueError, match="needs the column 'query'"):
        retriever.as_pyterrier()(topics_frame(TOPICS).rename(columns={"query": "text"}))
    twice = retriever.as_pyterrier(k=2)(topics_frame(TOPICS))
    with pytest.raises(ValueError, match="document 'd7' appears twice for query 'q1'"):
        reranker.as_pyterrier()(pt.model.add_ranks(twice.iloc[[0, 0, 1]].reset_index(drop=True)))


def test_first_on_a_tiny_llama_equals_the_pipeline(stages, fixtures_dir):
    """A real reranker class (FIRST, sliding window 3, stride 1, on the tiny random Llama) behind a cut."""
    from rankline.rerankers import build_reranker

    retriever, _ = stages
    first = build_reranker("first", str(fixtures_dir / "first-parity" / "tiny-llama"), device="cpu", window=3, stride=1)
    out = (retriever.as_pyterrier() % 5 >> first.as_pyterrier())(topics_frame(TOPICS))
    own = Pipeline.builder().retrieve(retriever, k=5).rerank(first, depth=5).run(TOPICS)
    assert frame_run(out) == {qid: docs for qid, docs in own.items() if docs}
    first_stage = {q: [h.docid for h in retriever.search(Query(q, text), 5)] for q, text in TOPICS.items()}
    assert any(rows.docno.tolist() != first_stage[q] for q, rows in out.groupby("qid"))  # FIRST did reorder
