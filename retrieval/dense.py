"""Dense retrieval over an index folder's FAISS index."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rankline.retrieval import faiss_index
from rankline.retrieval.base import PyTerrierRetriever, ReopenedOnUnpickle, check_queries
from rankline.retrieval.docstore import DocStore
from rankline.retrieval.encoder import Encoder, load_encoder
from rankline.retrieval.manifest import Manifest
from rankline.formats import Hit, Query


def check_k(k: int) -> None:
    if not isinstance(k, int) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")


class DenseRetriever(ReopenedOnUnpickle, PyTerrierRetriever):
    """Encodes queries with the index's encoder and searches its FAISS index.

    `device` places both: None (the default) runs the encoder on cuda when torch sees a GPU and moves
    the index to every GPU FAISS sees (the `gpu` extra), else both stay on the CPU; "cpu" keeps both
    on the CPU; "cuda" / "cuda:N" puts the encoder there and the index too where FAISS can (else it
    stays on the CPU, with a warning: `faiss_index.place`). `index_device` says where the index is.
    `encoder` may name another copy of the same model; its weights must hash to the manifest's.
    `nprobe` (IVF) and `ef_search` (HNSW) trade speed for recall; flat search is exact.
    """

    def __init__(self, folder: Path, manifest: Manifest, store: DocStore, *, encoder: str | Encoder | None = None,
                 device: str | None = None, nprobe: int = 32, ef_search: int = 128, batch_size: int = 64,
                 with_text: bool = True):
        if manifest.dense is None:
            raise ValueError(f"{folder}: this index has no dense part; build it with `rankline index CORPUS --out {folder} --dense`")
        spec = manifest.dense
        if not isinstance(encoder, Encoder):
            encoder = load_encoder(encoder or spec["encoder"], device=device)
        if encoder.weights_sha256 != spec["encoder_sha256"]:
            raise ValueError(f"{folder}: encoder {encoder.name!r} does not match the index's "
                             f"({spec['encoder']!r}, weights sha256 {spec['encoder_sha256'][:12]}...)")
        self.encoder, self.store, self.normalize = encoder, store, bool(spec["normalize"])
        self.batch_size, self.with_text = batch_size, with_text
        index = faiss_index.read(folder / spec["file"])
        faiss_index.set_search_params(index, nprobe=nprobe, ef_search=ef_search)
        self.index, self.index_device = faiss_index.place(index, device)

    def search(self, query: Query, k: int) -> list[Hit]:
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: Sequence[Query], k: int) -> list[list[Hit]]:
        check_k(k)
        check_queries(queries)
        if not queries:
            return []
        if self.index_device != "cpu" and min(k, self.index.ntotal) > faiss_index.GPU_MAX_K:
            raise ValueError(f"k={k}: FAISS returns at most {faiss_index.GPU_MAX_K} hits per query from an index on "
                             f"the GPU ({self.index_device}); ask for fewer, or open the retriever with device cpu")
        emb = self.encoder.encode_queries([q.text for q in queries], batch_size=self.batch_size, normalize=self.normalize)
        scores, ids = self.index.search(emb, min(k, self.index.ntotal))
        out = []
        for row_scores, row_ids in zip(scores.tolist(), ids.tolist()):
            keep = [(i, s) for i, s in zip(row_ids, row_scores) if i >= 0]
            docids = self.store.docids_at([i for i, _ in keep])
            out.append(self.store.to_hits([(d, s) for d, (_, s) in zip(docids, keep)], with_text=self.with_text))
        return out
