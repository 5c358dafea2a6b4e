"""The record types every stage passes along: a query, a document, and a scored hit."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Query:
    qid: str
    text: str


@dataclass(frozen=True)
class Doc:
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
