"""A toy query encoder over a sharded vector index, for the Ray tests of sharded search: each query
text maps to a small integer vector (word hashes), so a pipeline of it needs no model. Loaded by the
tests under a fixed name and sent to Ray workers by value, like toy_stages.py."""
from __future__ import annotations

import hashlib

import numpy as np

from rankline.formats import Hit

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
