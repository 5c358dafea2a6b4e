"""BM25 retrieval over an index folder's Lucene index (pyserini)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rankline.retrieval.base import PyTerrierRetriever, ReopenedOnUnpickle, check_queries
from rankline.retrieval.dense import check_k
from rankline.retrieval.docstore import DocStore
from rankline.retrieval.manifest import Manifest
from rankline.formats import Hit, Query

# pyserini's BEIR "flat" regressions search with Anserini's BM25 defaults.
DEFAULT_K1, DEFAULT_B = 0.9, 0.4


class BM25Retriever(ReopenedOnUnpickle, PyTerrierRetriever):
    """Lucene BM25 through pyserini's LuceneSearcher; `threads` parallelises search_batch."""

    def __init__(self, folder: Path, manifest: Manifest, store: DocStore, *, k1: float = DEFAULT_K1, b: float = DEFAULT_B,
                 threads: int = 1, with_text: bool = True):
        from rankline.retrieval.lucene_env import pyserini_lucene

        if manifest.bm25 is None:
            raise ValueError(f"{folder}: this index has no BM25 part; build it with `rankline index CORPUS --out {folder} --bm25`")
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.searcher = pyserini_lucene().LuceneSearcher(str(folder / manifest.bm25["dir"]))
        self.searcher.set_bm25(float(k1), float(b))
        self.store, self.threads, self.with_text = store, threads, with_text

    def search(self, query: Query, k: int) -> list[Hit]:
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: Sequence[Query], k: int) -> list[list[Hit]]:
        check_k(k)
        check_queries(queries)
        keys = [str(i) for i in range(len(queries))]  # qids need not be unique
        results = self.searcher.batch_search([q.text for q in queries], keys, k, self.threads) if queries else {}
        return [self.store.to_hits([(h.docid, h.score) for h in results.get(key, [])], with_text=self.with_text) for key in keys]
