"""Per-document relevance-label distributions: the file format, and the empirical distribution of
several hard LLM label files.

A distributions file has one line per judged pair, ``qid docid p0 p1 ... p{L-1}`` (whitespace
separated, probabilities of the grades 0..L-1 summing to one). Hard labels carry no uncertainty, so
conformal risk control cannot shift them; several label files (different LLMs or prompts) give an
empirical distribution per pair, smoothed with a symmetric Dirichlet pseudo-count so that every
grade keeps some mass.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from rankline.formats import FormatError, atomic_write, open_text

#: qid -> docid -> probabilities of the grades 0..L-1
LabelDist = dict[str, dict[str, np.ndarray]]

DEFAULT_GRADES = 4
#: Jeffreys-style pseudo-count added to every grade of an empirical distribution.
DEFAULT_PSEUDO_COUNT = 0.5
_SUM_TOLERANCE = 1e-4


def read_label_dist(path: str | os.PathLike) -> LabelDist:
    """Read a distributions file (``qid docid p0 .. p{L-1}``); every line must have the same L."""
    dists: LabelDist = {}
    width = None
    with open_text(path) as fh:
        for line_no, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 4:
                raise FormatError(path, line_no, f"expected 'qid docid p0 p1 ...', got {line.strip()!r}")
            if width is None:
                width = len(parts)
            elif len(parts) != width:
                raise FormatError(path, line_no, f"expected {width - 2} probabilities like the first line, got {len(parts) - 2}")
            try:
                probs = np.array([float(x) for x in parts[2:]])
            except ValueError:
                raise FormatError(path, line_no, f"expected probabilities, got {' '.join(parts[2:])!r}") from None
            if np.any(probs < 0) or abs(probs.sum() - 1.0) > _SUM_TOLERANCE:
                raise FormatError(path, line_no, f"expected non-negative probabilities summing to 1, got sum {probs.sum():.6f}")
            dists.setdefault(parts[0], {})[parts[1]] = probs / probs.sum()
    if width is None:
        raise FormatError(path, None, "no label distributions in file")
    return dists


def write_label_dist(path: str | os.PathLike, dists: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    """Write a distributions file atomically, pairs sorted by qid then docid."""
    with atomic_write(path) as fh:
        for qid in sorted(dists):
            for docid in sorted(dists[qid]):
                fh.write(f"{qid} {docid} " + " ".join(f"{p:.6g}" for p in dists[qid][docid]) + "\n")


def empirical_label_dist(
    label_sets: Sequence[Mapping[str, Mapping[str, int]]],
    *,
    grades: int = DEFAULT_GRADES,
    pseudo_count: float = DEFAULT_PSEUDO_COUNT,
) -> LabelDist:
    """Distribution of the grades several label sets (qrels) give each pair, plus `pseudo_count` per
    grade. A pair missing from some sets is counted over the sets that have it."""
    if not label_sets:
        raise ValueError("empirical label distribution: need at least one label set")
    if pseudo_count < 0:
        raise ValueError(f"pseudo_count must be >= 0, got {pseudo_count}")
    counts: dict[str, dict[str, np.ndarray]] = {}
    for labels in label_sets:
        for qid, docs in labels.items():
            per_query = counts.setdefault(qid, {})
            for docid, grade in docs.items():
                if not 0 <= grade < grades:
                    raise ValueError(f"query {qid} doc {docid}: grade {grade} outside 0..{grades - 1}")
                per_query.setdefault(docid, np.zeros(grades))[int(grade)] += 1
    return {
        qid: {docid: (c + pseudo_count) / (c.sum() + grades * pseudo_count) for docid, c in docs.items()}
        for qid, docs in counts.items()
    }


def expected_grades(dists: Mapping[str, Mapping[str, np.ndarray]], *, argmax: bool = False) -> dict[str, dict[str, int]]:
    """Integer qrels from distributions: the expected grade rounded to the nearest grade (qrels hold
    integer grades), or the most probable grade with `argmax`."""
    out: dict[str, dict[str, int]] = {}
    for qid, docs in dists.items():
        for docid, p in docs.items():
            grade = np.argmax(p) if argmax else np.floor(np.dot(p, np.arange(len(p))) + 0.5)
            out.setdefault(qid, {})[docid] = int(grade)
    return out
