"""The records every stage passes along: a query, a corpus document, a scored hit, and a query with
its candidates. Readers in this package produce them; retrievers, rerankers, the executor, the
journal and the evaluation's label tools all take and return these same types."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Query:
    qid: str
    text: str


@dataclass(frozen=True)
class Doc:
    """One document of a corpus."""

    docid: str
    text: str
    title: str = ""


@dataclass(frozen=True)
class Hit:
    """A document retrieved or reranked for one query; a higher score ranks higher."""

    docid: str
    score: float
    text: str = ""
    title: str = ""


@dataclass(frozen=True)
class Candidates:
    """A query and its candidate hits, best first: what a reranker receives and returns."""

    query: Query
    hits: tuple[Hit, ...]
