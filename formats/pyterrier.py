"""PyTerrier DataFrames ↔ rankline records, and the transformers every stage's `.as_pyterrier()` returns.

PyTerrier passes pandas DataFrames between its transformers: queries as ``qid, query`` and results as
``qid, query, docno, score, rank`` (``text`` and ``title`` where a stage supplies them). Its conventions,
kept here: ``rank`` counts from 0 down each query's list by descending score, exact ties in the order the
rows came (``pyterrier.model.add_ranks``), and a transformer's output is sorted by query, then rank.
Columns a transformer does not own (a rewritten query's ``query_0``, say) pass through unchanged.

A retriever's transformer takes a query frame and returns its top `k` hits per query, with their text
when the retriever has it. A reranker's takes any result frame that carries ``text`` (from a rankline
retriever, or any PyTerrier first stage followed by a text loader) and returns every row of it rescored.

Importing this module imports pyterrier (the `pyterrier` extra: PyTerrier's core, no Java).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

try:
    import pandas as pd
    import pyterrier as pt
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(f"the PyTerrier bridge needs PyTerrier ({exc}); install it with: pip install 'rankline[pyterrier]'") from None

from rankline.formats.records import Candidates, Hit, Query

SearchBatch = Callable[[Sequence[Query], int], list[list[Hit]]]
RerankBatch = Callable[[Sequence[Candidates]], list[list[Hit]]]

# Columns of a result frame that a stage writes; every other column of its input passes through.
_HIT_COLUMNS = ("docno", "text", "title", "score", "rank")


def _require(frame: pd.DataFrame, columns: Sequence[str], stage: str, advice: str = "") -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        names = ", ".join(repr(c) for c in missing)
        raise ValueError(f"{stage} needs the column{'s' if len(missing) > 1 else ''} {names} in its input, "
                         f"got {list(frame.columns)}{advice}")


def frame_queries(frame: pd.DataFrame, stage: str) -> list[Query]:
    """The queries of a PyTerrier query frame (``qid``, ``query``), one per row, in row order."""
    _require(frame, ("qid", "query"), stage)
    if "docno" in frame.columns:
        raise ValueError(f"{stage} takes a query frame (qid, query), got a result frame with 'docno'; "
                         "a retriever starts a pipeline")
    qids = [str(q) for q in frame["qid"]]
    seen: set[str] = set()
    for qid in qids:
        if qid in seen:
            raise ValueError(f"{stage}: query {qid!r} appears twice in its input")
        seen.add(qid)
    texts = list(frame["query"])
    for qid, text in zip(qids, texts):
        if not isinstance(text, str):
            raise ValueError(f"{stage}: query {qid!r} has a {type(text).__name__} in 'query', not a text")
    return [Query(qid, text) for qid, text in zip(qids, texts)]


def frame_candidates(frame: pd.DataFrame, stage: str) -> tuple[list[Candidates], list[list[int]]]:
    """The candidate lists of a PyTerrier result frame, queries in order of first appearance, each list
    best first (by ``rank`` where the frame has it, else by descending ``score``, ties in row order),
    and for each list the frame's row positions of its hits."""
    _require(frame, ("qid", "query", "docno", "text"), stage,
             "; a rankline reranker reads each candidate's text: give it a first stage that supplies 'text' "
             "(a rankline retriever does) or add a text loader, e.g. >> pt.text.get_text(dataset, 'text')")
    qids = [str(q) for q in frame["qid"]]
    rows_of: dict[str, list[int]] = {}
    for row, qid in enumerate(qids):
        rows_of.setdefault(qid, []).append(row)
    key = (frame["rank"].to_numpy() if "rank" in frame.columns
           else (-frame["score"]).to_numpy() if "score" in frame.columns else None)
    docnos, queries, texts = [str(d) for d in frame["docno"]], list(frame["query"]), list(frame["text"])
    titles = [str(t) for t in frame["title"]] if "title" in frame.columns else None
    scores = frame["score"].astype(float).tolist() if "score" in frame.columns else None
    lists, positions = [], []
    for qid, rows in rows_of.items():
        if key is not None:
            rows = sorted(rows, key=lambda r: key[r])  # stable: ties keep row order
        seen: set[str] = set()
        hits = []
        for r in rows:
            if docnos[r] in seen:
                raise ValueError(f"{stage}: document {docnos[r]!r} appears twice for query {qid!r}")
            seen.add(docnos[r])
            if not isinstance(texts[r], str):
                raise ValueError(f"{stage}: document {docnos[r]!r} of query {qid!r} has a {type(texts[r]).__name__} "
                                 "in 'text', not a text")
            hits.append(Hit(docnos[r], scores[r] if scores else 0.0, texts[r], titles[r] if titles else ""))
        lists.append(Candidates(Query(qid, queries[rows[0]]), tuple(hits)))
        positions.append(rows)
    return lists, positions


def _ranked(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` sorted by query (in order of first appearance), then by descending score with ties in row
    order, and PyTerrier's ranks added."""
    order = {qid: i for i, qid in enumerate(dict.fromkeys(frame["qid"]))}
    frame = frame.assign(_query=frame["qid"].map(order)).sort_values(
        ["_query", "score"], ascending=[True, False], kind="stable").drop(columns=["_query"])
    return pt.model.add_ranks(frame.reset_index(drop=True))


def hits_frame(queries: pd.DataFrame, hits: Sequence[Sequence[Hit]]) -> pd.DataFrame:
    """A result frame: for row i of the query frame `queries`, one row per hit of ``hits[i]``, best first,
    with the query row's columns, ``docno``, ``score``, ``rank`` and ``text``/``title`` where any hit has them."""
    source = [i for i, row_hits in enumerate(hits) for _ in row_hits]
    flat = [h for row_hits in hits for h in row_hits]
    out = queries.drop(columns=[c for c in _HIT_COLUMNS if c in queries.columns]).iloc[source].reset_index(drop=True)
    out["qid"] = out["qid"].astype(str)
    out["docno"] = [h.docid for h in flat]
    for column in ("text", "title"):
        if any(getattr(h, column) for h in flat):
            out[column] = [getattr(h, column) for h in flat]
    out["score"] = pd.Series([float(h.score) for h in flat], dtype="float64")
    return _ranked(out)


class RetrieverTransformer(pt.Transformer):
    """A rankline retriever (its `search_batch`) as a PyTerrier transformer: queries in, top `k` per query out."""

    def __init__(self, search_batch: SearchBatch, k: int, name: str):
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        self.search_batch, self.k, self.name = search_batch, k, name

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        stage = f"{self.name}.as_pyterrier()"
        queries = frame_queries(inp, stage)
        return hits_frame(inp, self.search_batch(queries, self.k) if queries else [])

    def __repr__(self) -> str:
        return f"{self.name}.as_pyterrier(k={self.k})"


class RerankerTransformer(pt.Transformer):
    """A rankline reranker (its `rerank_batch`) as a PyTerrier transformer: every row of a result frame that
    has ``text``, rescored and ranked anew; the other columns pass through."""

    def __init__(self, rerank_batch: RerankBatch, name: str):
        self.rerank_batch, self.name = rerank_batch, name

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        stage = f"{self.name}.as_pyterrier()"
        lists, positions = frame_candidates(inp, stage)
        todo = [i for i, c in enumerate(lists) if c.hits]
        reranked = self.rerank_batch([lists[i] for i in todo]) if todo else []
        rows, scores = [], []
        for i, hits in zip(todo, reranked):
            row_of = {h.docid: r for h, r in zip(lists[i].hits, positions[i])}
            if sorted(h.docid for h in hits) != sorted(row_of):
                raise ValueError(f"{stage}: the reranker returned other documents than it was given for query "
                                 f"{lists[i].query.qid!r}")
            rows += [row_of[h.docid] for h in hits]
            scores += [float(h.score) for h in hits]
        out = inp.iloc[rows].reset_index(drop=True)
        out["qid"] = out["qid"].astype(str)
        out["score"] = pd.Series(scores, dtype="float64")
        return _ranked(out)

    def __repr__(self) -> str:
        return f"{self.name}.as_pyterrier()"


# ------------------------------------------------------------------ evaluation tables as PyTerrier frames


def topics_frame(topics: Mapping[str, str]) -> pd.DataFrame:
    """``{qid: text}`` (what read_topics returns) as a PyTerrier query frame."""
    return pd.DataFrame({"qid": list(topics), "query": list(topics.values())}, columns=["qid", "query"])


def qrels_frame(qrels: Mapping[str, Mapping[str, int]]) -> pd.DataFrame:
    """``{qid: {docid: grade}}`` (what read_qrels returns) as PyTerrier's qrels frame (qid, docno, label)."""
    rows = [(qid, docid, int(grade)) for qid, docs in qrels.items() for docid, grade in docs.items()]
    return pd.DataFrame(rows, columns=["qid", "docno", "label"])


def run_frame(run: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """``{qid: {docid: score}}`` (what read_run returns) as a PyTerrier result frame (qid, docno, score, rank)."""
    rows = [(qid, docid, float(score)) for qid, docs in run.items() for docid, score in docs.items()]
    return _ranked(pd.DataFrame(rows, columns=["qid", "docno", "score"]))


def frame_run(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """A PyTerrier result frame as ``{qid: {docid: score}}``; a document twice for a query is an error."""
    _require(frame, ("qid", "docno", "score"), "a run")
    run: dict[str, dict[str, float]] = {}
    for qid, docno, score in zip(frame["qid"], frame["docno"], frame["score"].astype(float)):
        docs = run.setdefault(str(qid), {})
        if str(docno) in docs:
            raise ValueError(f"document {docno!r} appears twice for query {qid!r}")
        docs[str(docno)] = float(score)
    return run
