"""Small deterministic stages implementing the Retriever / Reranker protocols, for machinery tests.

KeywordRetriever scores a document by how many distinct query words it contains (ties: docid
ascending), so expected rankings can be worked out by hand. ShortestFirstReranker puts shorter
documents first (ties: docid ascending) and scores by rank, strictly decreasing.
"""
from __future__ import annotations

import os
import time
from typing import Sequence

from rankline.formats import Candidates, Doc, Hit, Query

CORPUS = [
    Doc("d1", "ray serve deploys python models behind http", "Serve"),
    Doc("d2", "ray actors hold state between calls", "Actors"),
    Doc("d3", "bm25 ranks documents by term frequency and inverse document frequency", "BM25"),
    Doc("d4", "dense retrieval encodes queries and documents into vectors", "Dense"),
    Doc("d5", "listwise rerankers order documents with a language model", "FIRST"),
    Doc("d6", "trec run files list documents per query with ranks and scores", "TREC"),
    Doc("d7", "python ray actors", "Short"),
    Doc("d8", "documents", ""),
    Doc("d9", "caf\u00e9 cr\u00e8me", "Caf\u00e9"),  # composed (NFC) accents
]


def words(text: str) -> set[str]:
    return set(text.lower().split())


def crash_or_log(crash_file: str | None, log_file: str | None, queries: Sequence[Query]) -> None:
    """`crash_file`: if it exists, remove it and kill this process (a replica dying mid-call, once).
    `log_file`: append the call's qids, one line per call (to count recomputation and see batches)."""
    if crash_file and os.path.exists(crash_file):
        os.unlink(crash_file)
        os._exit(1)
    if log_file:
        with open(log_file, "a") as fh:
            fh.write(" ".join(q.qid for q in queries) + "\n")


class KeywordRetriever:
    """`crash_file` and `log_file` act on `search_batch` calls (see `crash_or_log`). A batch holding
    a query with the word `reject_word` fails as a whole with a ValueError (as a tokenizer does on
    one bad query); one holding `slow_word` takes `slow_s` seconds."""

    def __init__(self, docs: Sequence[Doc] = tuple(CORPUS), crash_file: str | None = None,
                 log_file: str | None = None, reject_word: str | None = None, slow_word: str | None = None,
                 slow_s: float = 5.0):
        self.docs = list(docs)
        self.crash_file, self.log_file = crash_file, log_file
        self.reject_word, self.slow_word, self.slow_s = reject_word, slow_word, slow_s

    def search(self, query: Query, k: int) -> list[Hit]:
        q = words(query.text)
        scored = [(len(q & words(d.text)), d) for d in self.docs]
        scored = [(s, d) for s, d in scored if s > 0]
        scored.sort(key=lambda sd: (-sd[0], sd[1].docid))
        return [Hit(d.docid, float(s), d.text, d.title) for s, d in scored[:k]]

    def search_batch(self, queries: Sequence[Query], k: int) -> list[list[Hit]]:
        crash_or_log(self.crash_file, self.log_file, queries)
        for q in queries:
            if self.reject_word in words(q.text):
                raise ValueError(f"query {q.qid}: the word {self.reject_word!r} cannot be searched")
            if self.slow_word in words(q.text):
                time.sleep(self.slow_s)
        return [self.search(q, k) for q in queries]


class ShortestFirstReranker:
    """Shorter text ranks higher. `crash_file` and `log_file` act on `rerank_batch` calls (see
    `crash_or_log`): a reranker replica dying mid-job, once; reranked qids, to count recomputation
    and see batches. While `hold_file` exists, the constructor waits (a replica slow to start)."""

    def __init__(self, crash_file: str | None = None, log_file: str | None = None, hold_file: str | None = None):
        self.crash_file, self.log_file = crash_file, log_file
        while hold_file and os.path.exists(hold_file):
            time.sleep(0.2)

    def rerank_batch(self, lists: Sequence[Candidates]) -> list[list[Hit]]:
        crash_or_log(self.crash_file, self.log_file, [c.query for c in lists])
        out = []
        for c in lists:
            order = sorted(c.hits, key=lambda h: (len(h.text), h.docid))
            out.append([Hit(h.docid, float(len(order) - i), h.text, h.title) for i, h in enumerate(order)])
        return out
