"""The published SciFact (BEIR test split) numbers, with the real all-MiniLM-L6-v2 and pyserini BM25.

Published nDCG@10: BM25 flat 0.679 (pyserini BEIR regressions), all-MiniLM-L6-v2 0.645 (BEIR /
sentence-transformers); BM25 R@100 0.925. Hybrid fusion of the two must reach 0.71. The index is
built once into $RANKLINE_CACHE/indexes/scifact-minilm (default ~/.cache/rankline) and reused while
its manifest matches the corpus (a few minutes on 2 cores the first time).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from rankline.formats import read_qrels
from rankline.evaluation.metrics import evaluate, mean_scores
from rankline.retrieval import BuildOptions, build_index, open_retriever
from rankline.retrieval.corpus import load_queries

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scifact(data_dir):
    beir = data_dir / "beir" / "scifact"
    cache = Path(os.environ.get("RANKLINE_CACHE", Path.home() / ".cache" / "rankline"))
    index = cache / "indexes" / "scifact-minilm"
    build_index([beir], index, BuildOptions(progress=False))
    return beir, index


def _scores(scifact, method, **options):
    beir, index = scifact
    queries = load_queries(beir, "test")
    retriever = open_retriever(index, method, with_text=False, **options)
    run = {q.qid: {h.docid: h.score for h in hits} for q, hits in zip(queries, retriever.search_batch(queries, 100))}
    return mean_scores(evaluate(read_qrels(beir / "qrels" / "test.tsv"), run, ["nDCG@10", "R@100"]))


def test_bm25_matches_pyserini_flat(scifact):
    scores = _scores(scifact, "bm25")
    assert scores["nDCG@10"] == pytest.approx(0.679, abs=0.003)
    assert scores["R@100"] == pytest.approx(0.925, abs=0.005)


def test_dense_minilm_matches_published(scifact):
    assert _scores(scifact, "dense")["nDCG@10"] == pytest.approx(0.645, abs=0.003)


@pytest.mark.parametrize("fusion", ["rrf", "interpolate"])
def test_hybrid_beats_both(scifact, fusion):
    assert _scores(scifact, "hybrid", fusion=fusion)["nDCG@10"] >= 0.71
