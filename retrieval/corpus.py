"""Corpora and query sets as rankline records: BEIR folders, pyserini jsonl(.gz) and TSV files.

File parsing is rankline.formats'; this module resolves BEIR folders, turns records into
:class:`Doc` / :class:`Query`, refuses empty corpora and duplicate ids, and fingerprints corpus files
so an index knows what it was built from.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rankline.formats import Doc, Query, iter_corpus, read_qrels, read_topics

PathLike = str | os.PathLike


def corpus_file(path: PathLike) -> Path:
    """The corpus file behind `path`: the file itself, or a BEIR folder's corpus.jsonl(.gz)."""
    path = Path(path)
    if path.is_dir():
        for name in ("corpus.jsonl", "corpus.jsonl.gz"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: a folder corpus must hold corpus.jsonl or corpus.jsonl.gz (BEIR layout)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such corpus file or folder")
    return path


def iter_docs(path: PathLike) -> Iterator[Doc]:
    """Stream the documents of a corpus; raises ValueError for an empty corpus."""
    source = corpus_file(path)
    empty = True
    for rec in iter_corpus(source):
        empty = False
        yield rec
    if empty:
        raise ValueError(f"{source}: the corpus holds no documents")


def doc_contents(doc: Doc) -> str:
    """The text a document is indexed by (dense and BM25 alike): title and body joined by a space,
    as BEIR's dense evaluation and pyserini's BEIR "flat" indexes do."""
    return f"{doc.title} {doc.text}".strip() if doc.title else doc.text.strip()


@dataclass(frozen=True)
class CorpusSource:
    """A corpus file an index was built from: where it was and a hash of its bytes."""

    path: str
    sha256: str

    @classmethod
    def of(cls, path: PathLike) -> "CorpusSource":
        source = corpus_file(path)
        return cls(str(source.resolve()), file_sha256(source))


def file_sha256(path: PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_queries(path: PathLike, split: str | None = None) -> list[Query]:
    """Queries from a topics file (TSV or BEIR queries.jsonl) or a BEIR folder.

    For a BEIR folder, `split` (default "test") keeps only the queries judged in qrels/<split>.tsv, in
    the order of queries.jsonl. For a file, `split` must be None.
    """
    path = Path(path)
    if path.is_dir():
        split = split or "test"
        qrels_path = path / "qrels" / f"{split}.tsv"
        topics = read_topics(_first_existing(path, ("queries.jsonl", "queries.jsonl.gz")))
        judged = read_qrels(qrels_path)
        topics = {qid: text for qid, text in topics.items() if qid in judged}
    else:
        if split is not None:
            raise ValueError(f"{path}: --split only applies to a BEIR folder, not a topics file")
        topics = read_topics(path)
    if not topics:
        raise ValueError(f"{path}: no queries found" + (f" for split {split!r}" if split else ""))
    return [Query(qid, text) for qid, text in topics.items()]


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: expected one of {', '.join(names)}")
