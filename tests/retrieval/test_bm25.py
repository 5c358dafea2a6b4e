"""BM25 through pyserini: Lucene's formula computed by hand, append equals rebuild, hybrid = fusion of parts."""
from __future__ import annotations

import math

import pytest

from rankline.formats import Query
from rankline.retrieval import BuildOptions, build_index, open_index, open_retriever
from rankline.retrieval.fusion import rrf

from .conftest import DOCS_A, DOCS_B, write_beir_corpus

BM25_ONLY = BuildOptions(dense=False, bm25=True, progress=False)


def lucene_bm25(tf: int, dl: int, n: int, N: int, avgdl: float, k1: float = 0.9, b: float = 0.4) -> float:
    """Lucene's BM25 (no (k1 + 1) factor since Lucene 8); lengths below 40 are stored exactly."""
    idf = math.log(1 + (N - n + 0.5) / (n + 0.5))
    return idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))


def test_scores_match_lucene_formula(tmp_path):
    corpus = write_beir_corpus(tmp_path / "c.jsonl", [
        ("d1", "", "apple banana apple"), ("d2", "", "banana cherry"), ("d3", "", "quick fox"), ("d4", "", "apple pie"),
    ])
    build_index([corpus], tmp_path / "idx", BM25_ONLY)
    avgdl = (3 + 2 + 2 + 2) / 4
    for k1, b in ((0.9, 0.4), (1.2, 0.75)):
        hits = open_retriever(tmp_path / "idx", "bm25", k1=k1, b=b).search(Query("q", "apple"), 10)
        assert [h.docid for h in hits] == ["d1", "d4"]
        # Anserini reports scores rounded to 4 decimals
        assert hits[0].score == pytest.approx(lucene_bm25(2, 3, 2, 4, avgdl, k1, b), abs=1e-4)
        assert hits[1].score == pytest.approx(lucene_bm25(1, 2, 2, 4, avgdl, k1, b), abs=1e-4)
    assert hits[0].text == "apple banana apple"


def test_title_is_indexed_and_batch_keeps_duplicate_qids(corpus_a, tmp_path):
    build_index([corpus_a], tmp_path / "idx", BM25_ONLY)
    retriever = open_retriever(tmp_path / "idx", "bm25")
    hits = retriever.search_batch([Query("same", "Cherries"), Query("same", "vineyards")], 3)
    assert hits[0][0].docid == "a3" and hits[0][0].title == "Cherries"  # matched by the title only
    assert hits[1][0].docid == "a5"


def test_append_equals_rebuild(corpus_a, corpus_b, tmp_path):
    build_index([corpus_a], tmp_path / "added", BM25_ONLY)
    build_index([corpus_b], tmp_path / "added", BM25_ONLY, add=True)
    build_index([corpus_a, corpus_b], tmp_path / "whole", BM25_ONLY)
    assert open_index(tmp_path / "added").count == open_index(tmp_path / "whole").count == len(DOCS_A + DOCS_B)
    for query in ("fruit trees", "lemon juice vitamin", "apples in autumn"):
        added = open_retriever(tmp_path / "added", "bm25").search(Query("q", query), 8)
        whole = open_retriever(tmp_path / "whole", "bm25").search(Query("q", query), 8)
        assert [(h.docid, h.score) for h in added] == [(h.docid, h.score) for h in whole]


def test_hybrid_is_the_fusion_of_its_parts(tiny_encoder, corpus_a, corpus_b, tmp_path):
    out = tmp_path / "idx"
    build_index([corpus_a, corpus_b], out, BuildOptions(encoder=tiny_encoder, progress=False))
    query = Query("q", "fruit trees in spring")
    bm25 = {h.docid: h.score for h in open_retriever(out, "bm25").search(query, 1000)}
    dense = {h.docid: h.score for h in open_retriever(out, "dense").search(query, 1000)}
    fused = rrf([bm25, dense], k=60)
    hits = open_retriever(out, "hybrid").search(query, 5)
    assert [h.score for h in hits] == pytest.approx(sorted(fused.values(), reverse=True)[:5])
    assert all(h.text for h in hits)
    # alpha = 1: BM25 alone decides (its lowest hit normalises to 0, like absent documents, so compare the top 2)
    interp = open_retriever(out, "hybrid", fusion="interpolate", alpha=1.0).search(query, 2)
    assert [h.docid for h in interp] == [h.docid for h in open_retriever(out, "bm25").search(query, 2)]


def test_an_opened_retriever_travels_by_its_opening_arguments(corpus_a, tmp_path):
    """Live Lucene/SQLite handles cannot be pickled; an opened retriever is reopened on unpickling
    (this is how the same pipeline object goes to Ray actors) and answers exactly as the original."""
    import pickle

    build_index([corpus_a], tmp_path / "idx", BM25_ONLY)
    retriever = open_retriever(tmp_path / "idx", "bm25", k1=1.2, b=0.75)
    copy = pickle.loads(pickle.dumps(retriever))
    assert copy is not retriever and copy.opened_with == retriever.opened_with
    for query in ("fruit trees", "Cherries"):
        assert copy.search(Query("q", query), 5) == retriever.search(Query("q", query), 5)
