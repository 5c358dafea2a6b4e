"""Reading first-stage candidate lists for reranking, from any of three formats:

- requests jsonl (the FIRST parity fixtures' format), one query a line:
  ``{"qid", "query", "candidates": [{"docid", "score", "title"?, "text"}]}``, candidates in first-stage order;
- rank_llm's retrieve-results JSON (optionally .gz): ``[{"query", "hits": [{"qid", "docid", "rank",
  "score", "content"}]}]``;
- a TREC run together with a topics file and a corpus file (any format of rankline.formats);
  hits are taken in trec_eval order.

A UTF-8 byte-order mark at the start of any of these files is dropped. A query twice in a file, or a
document twice in one query's candidates, is an error that names the file, the line (where the format
has lines), the query and the document: every command that reads candidates refuses them alike, as
`rankline eval` refuses a document twice in a run.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

from rankline.formats.files import id_problem, iter_corpus, read_run, read_topics
from rankline.formats.io import FormatError, open_text
from rankline.formats.order import ranked
from rankline.formats.records import Candidates, Hit, Query

PathLike = str | os.PathLike


def _field(path: PathLike, where: int | None, obj: Any, key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise FormatError(path, where, f"{what}: expected a {key!r} field")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise FormatError(path, where, f"{what}: field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _id(path: PathLike, where: int | None, obj: Any, key: str, what: str) -> str:
    """A qid or docid field (a string, or an integer): one word, as the TREC run it ends up in needs."""
    value = str(_field(path, where, obj, key, (str, int), what))
    problem = id_problem(value)
    if problem is not None:
        raise FormatError(path, where, f"{what}: {key} {value!r} {problem}; ids must be one word")
    return value


def _score(path: PathLike, where: int | None, obj: Any, what: str) -> float:
    value = float(_field(path, where, obj, "score", (int, float), what))
    if not math.isfinite(value):
        raise FormatError(path, where, f"{what}: expected a finite score, got {value!r}")
    return value


class _Seen:
    """The queries of a candidates file, and the documents of each: a query twice in the file, or a
    document twice in one query's list, is refused (naming the file, the line where known, the query
    and the document) instead of one copy silently replacing the other."""

    def __init__(self, path: PathLike):
        self.path = path
        self.queries: dict[str, str] = {}  # qid -> where it was first seen

    def query(self, qid: str, where: str, line_no: int | None) -> None:
        if qid in self.queries:
            raise FormatError(self.path, line_no, f"{where}: query {qid!r} appears twice (first in {self.queries[qid]}); "
                              "each query may have one candidate list")
        self.queries[qid] = where if line_no is None else f"line {line_no}"

    def hits(self, qid: str, hits: list[Hit], what: str, line_no: int | None) -> tuple[Hit, ...]:
        first: dict[str, int] = {}
        for j, hit in enumerate(hits):
            if hit.docid in first:
                raise FormatError(self.path, line_no, f"query {qid!r}: document {hit.docid!r} appears twice in its "
                                  f"candidates ({what} {first[hit.docid]} and {j})")
            first[hit.docid] = j
        return tuple(hits)


def _read_requests(path: PathLike) -> list[Candidates]:
    out = []
    seen = _Seen(path)
    with open_text(path) as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FormatError(path, line_no, f"expected a JSON object ({exc.msg})") from None
            what = "request"
            qid = _id(path, line_no, obj, "qid", what)
            query = _field(path, line_no, obj, "query", str, what)
            seen.query(qid, "request", line_no)
            hits = []
            for j, cand in enumerate(_field(path, line_no, obj, "candidates", list, what)):
                what = f"candidate {j}"
                hits.append(Hit(
                    _id(path, line_no, cand, "docid", what),
                    _score(path, line_no, cand, what),
                    _field(path, line_no, cand, "text", str, what),
                    cand.get("title") or "",
                ))
            out.append(Candidates(Query(qid, query), seen.hits(qid, hits, "candidates", line_no)))
    return out


def _read_rank_llm(path: PathLike) -> list[Candidates]:
    with open_text(path) as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise FormatError(path, exc.lineno, f"expected rank_llm retrieve results JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise FormatError(path, None, "expected a JSON list of {'query', 'hits'} objects")
    out = []
    seen = _Seen(path)
    for i, obj in enumerate(data):
        what = f"entry {i}"
        query = _field(path, None, obj, "query", str, what)
        raw_hits = _field(path, None, obj, "hits", list, what)
        if not raw_hits:
            raise FormatError(path, None, f"{what}: no hits, so no qid")
        qid = _id(path, None, raw_hits[0], "qid", f"entry {i} hit 0")
        seen.query(qid, what, None)
        hits = []
        for j, h in enumerate(raw_hits):
            what = f"entry {i} hit {j}"
            hit_qid = str(_field(path, None, h, "qid", (str, int), what))
            if hit_qid != qid:
                raise FormatError(path, None, f"{what}: qid {hit_qid!r}, but hit 0 of the entry has qid {qid!r}")
            hits.append(Hit(
                _id(path, None, h, "docid", what),
                _score(path, None, h, what),
                _field(path, None, h, "content", str, what),
            ))
        out.append(Candidates(Query(qid, query), seen.hits(qid, hits, f"entry {i} hits", None)))
    return out


def _read_trec(path: PathLike, topics_path: PathLike, corpus_path: PathLike) -> list[Candidates]:
    run = read_run(path)
    topics = read_topics(topics_path)
    missing = [qid for qid in run if qid not in topics]
    if missing:
        raise ValueError(f"{topics_path}: no text for {len(missing)} queries of {path} (e.g. {missing[0]!r})")
    wanted = {docid for docs in run.values() for docid in docs}
    docs: dict[str, Any] = {}
    for r in iter_corpus(corpus_path):
        if r.docid in wanted:
            if r.docid in docs:  # which text would the reranker read? (an index refuses this corpus too)
                raise FormatError(corpus_path, None, f"document {r.docid!r} appears twice")
            docs[r.docid] = r
    absent = wanted - docs.keys()
    if absent:
        raise ValueError(f"{corpus_path}: {len(absent)} documents of {path} not found (e.g. {min(absent)!r})")
    return [
        Candidates(
            Query(qid, topics[qid]),
            tuple(Hit(d, s, docs[d].text, docs[d].title) for d, s in ranked(ranking)),
        )
        for qid, ranking in run.items()
    ]


def _first_char(path: PathLike) -> str:
    with open_text(path) as fh:
        while True:
            chunk = fh.read(4096)
            if not chunk:
                return ""
            stripped = chunk.lstrip()
            if stripped:
                return stripped[0]


def read_candidates(
    path: PathLike, *, topics: PathLike | None = None, corpus: PathLike | None = None
) -> list[Candidates]:
    """Candidate lists from a requests jsonl, a rank_llm JSON, or a TREC run with `topics` and `corpus`."""
    if (topics is None) != (corpus is None):
        raise ValueError("a TREC run needs both --topics and --corpus")
    if topics is not None and corpus is not None:
        return _read_trec(path, topics, corpus)
    first = _first_char(path)
    if not first:
        raise FormatError(path, None, "the file is empty; expected a requests jsonl or rank_llm JSON")
    if first == "[":
        return _read_rank_llm(path)
    if first == "{":
        return _read_requests(path)
    raise FormatError(
        path, 1, "expected a requests jsonl ('{...}' lines) or rank_llm JSON ('[...]'); "
        "for a TREC run pass --topics and --corpus"
    )
