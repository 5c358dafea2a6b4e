"""A toy query encoder over a sharded vector index, for the Ray tests of sharded search: each query
text maps to a small integer vector (word hashes), so a pipeline of it needs no model; a tiny vector
index with ties across shards, and the unsharded oracle (FAISS's flat search in trec_eval order).
Loaded by the tests under a fixed name and sent to Ray workers by value, like toy_stages.py."""
from __future__ import annotations

import hashlib
import os

import numpy as np

from rankline.formats import Hit, trec_order

DIM = 6


def text_vector(text: str) -> np.ndarray:
    """Small integers from the md5 of each word, summed over the words: a deterministic toy embedding."""
    out = np.zeros(DIM, np.float32)
    for word in text.lower().split():
        digest = hashlib.md5(word.encode("utf-8")).digest()
        out += np.frombuffer(digest[:DIM], np.uint8).astype(np.float32) % 5 - 2
    return out


class HashedQueries:
    """A Retriever: the query text's `text_vector`, searched with `open_sharded_retriever(index_dir, shards, **options)`."""

    def __init__(self, index_dir: str, shards: int, **options):
        from rankline.retrieval.sharding import open_sharded_retriever

        self.inner = open_sharded_retriever(index_dir, shards, **options)

    def search(self, query, k):
        return self.search_batch([query], k)[0]

    def search_batch(self, queries, k):
        vectors = np.stack([text_vector(q.text) for q in queries]) if queries else np.zeros((0, DIM), np.float32)
        return [[Hit(d, float(s)) for d, s in zip(ids, scores)] for ids, scores in self.inner.search_vectors(vectors, k)]

    def close(self):
        self.inner.close()


def tiny_index(folder, n: int = 60, dim: int = DIM, seed: int = 0):
    """A flat vector index of `n` small-integer vectors (so FAISS's float32 sums are exact), 8 of them
    equal (ties across shards), doc ids in shuffled order, embedding files of 9 rows; (vectors, docids)."""
    from rankline.retrieval.sharding import write_vector_index

    rng = np.random.default_rng(seed)
    vectors = rng.integers(-2, 3, size=(n, dim)).astype(np.float32)
    vectors[rng.choice(n, 8, replace=False)] = vectors[1]
    docids = [f"doc{i:03d}" for i in rng.permutation(n)]
    write_vector_index(folder, vectors, docids, shard_size=9)
    return vectors, docids


def unsharded(vectors, docids, queries, k):
    """Each query's top `k` by FAISS's flat search over the whole index, in trec_eval order: (doc ids, scores)."""
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    scores, ids = index.search(queries, len(vectors))
    out = []
    for row_scores, row_ids in zip(scores, ids):
        order = trec_order([docids[i] for i in row_ids], row_scores)[:k]
        out.append(([docids[row_ids[i]] for i in order], row_scores[order].tolist()))
    return out


def shard_pids() -> set[int]:
    """Process ids of the running shard actors started from this process (Ray titles an actor's
    process ray::ShardServer...)."""
    import psutil

    pids = set()
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and "ray::ShardServer" in " ".join(proc.cmdline()):
                pids.add(proc.pid)
        except psutil.NoSuchProcess:
            continue
    return pids
