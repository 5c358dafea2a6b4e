"""Hybrid retrieval: two or more retrievers fused per query (RRF or min-max interpolation)."""
from __future__ import annotations

from typing import Sequence

from rankline.formats import Hit, Query, ranked
from rankline.retrieval.base import PyTerrierRetriever, ReopenedOnUnpickle, Retriever
from rankline.retrieval.dense import check_k
from rankline.retrieval.docstore import DocStore
from rankline.retrieval.fusion import FUSIONS, fuse


class HybridRetriever(ReopenedOnUnpickle, PyTerrierRetriever):
    """Runs every retriever to `fusion_depth` (at least k) and fuses their rankings.

    fusion="rrf" (k = `rrf_k`) or "interpolate" (min-max normalised scores weighted by `weights`,
    equal by default).
    """

    def __init__(self, retrievers: Sequence[Retriever], store: DocStore, *, fusion: str = "rrf", rrf_k: int = 60,
                 weights: Sequence[float] | None = None, fusion_depth: int = 1000, with_text: bool = True):
        if len(retrievers) < 2:
            raise ValueError("a hybrid retriever fuses two or more retrievers")
        check_k(fusion_depth)
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}: expected one of {', '.join(FUSIONS)}")
        if weights is not None and len(weights) != len(retrievers):
            raise ValueError(f"{len(weights)} fusion weights for {len(retrievers)} retrievers")
        self.retrievers, self.store = list(retrievers), store
        self.fusion, self.rrf_k, self.weights, self.fusion_depth, self.with_text = fusion, rrf_k, weights, fusion_depth, with_text

    def search(self, query: Query, k: int) -> list[Hit]:
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: Sequence[Query], k: int) -> list[list[Hit]]:
        check_k(k)
        fusion_depth = max(k, self.fusion_depth)
        per_retriever = [r.search_batch(queries, fusion_depth) for r in self.retrievers]
        out = []
        for i in range(len(queries)):
            rankings = [{h.docid: h.score for h in hits[i]} for hits in per_retriever]
            fused = fuse(rankings, self.fusion, rrf_k=self.rrf_k, weights=self.weights)
            out.append(self.store.to_hits(ranked(fused)[:k], with_text=self.with_text))
        return out
