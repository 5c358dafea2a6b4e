"""The document store kept in every index folder: one SQLite file mapping positions and doc ids to
title and text.

A document's position (0, 1, ... in indexing order) is also its row in the FAISS index, so the store
is the id map of the dense index as well as the source of hit texts for both retrievers.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from rankline.formats import Doc, Hit

_SCHEMA = "CREATE TABLE docs (pos INTEGER PRIMARY KEY, docid TEXT NOT NULL UNIQUE, title TEXT NOT NULL, text TEXT NOT NULL)"
_CHUNK = 900  # stays under SQLite's default limit on bound parameters


class DocStore:
    """Read access to a store; :meth:`append` writes (only used while building an index)."""

    def __init__(self, path: str | os.PathLike, *, writable: bool = False):
        self.path = Path(path)
        if not writable and not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: document store missing")
        uri = f"file:{self.path}?mode={'rwc' if writable else 'ro'}"
        # Read-only connections are shared by the threads of a server; sqlite3 serialises access.
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        if writable:
            self._db.execute("PRAGMA journal_mode=DELETE")
            if not self._db.execute("SELECT name FROM sqlite_master WHERE name='docs'").fetchone():
                self._db.execute(_SCHEMA)
                self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "DocStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM docs").fetchone()[0]

    def append(self, docs: Iterable[Doc], *, source: str = "corpus") -> int:
        """Add documents after the existing ones in one transaction; a doc id seen before (in this
        batch or already stored) raises ValueError naming it. Returns how many were added."""
        start = len(self)
        added = 0
        try:
            with self._db:
                for pos, doc in enumerate(docs, start):
                    self._db.execute("INSERT INTO docs VALUES (?, ?, ?, ?)", (pos, doc.docid, doc.title, doc.text))
                    added += 1
        except sqlite3.IntegrityError:
            raise ValueError(f"{source}: duplicate document id {doc.docid!r} (document {added + 1} of this corpus)") from None
        return added

    def docids_at(self, positions: Sequence[int]) -> list[str]:
        """Doc ids of the given positions, in the same order."""
        found: dict[int, str] = {}
        for i in range(0, len(positions), _CHUNK):
            chunk = [int(p) for p in positions[i : i + _CHUNK]]
            marks = ",".join("?" * len(chunk))
            found.update(self._db.execute(f"SELECT pos, docid FROM docs WHERE pos IN ({marks})", chunk).fetchall())
        return [found[int(p)] for p in positions]

    def get(self, docids: Sequence[str]) -> dict[str, Doc]:
        """The stored documents among `docids` (ids not in the store are absent from the result)."""
        found: dict[str, Doc] = {}
        for i in range(0, len(docids), _CHUNK):
            chunk = list(docids[i : i + _CHUNK])
            marks = ",".join("?" * len(chunk))
            for docid, title, text in self._db.execute(f"SELECT docid, title, text FROM docs WHERE docid IN ({marks})", chunk):
                found[docid] = Doc(docid, text, title)
        return found

    def iter_range(self, start: int, stop: int, batch: int = 10_000) -> Iterator[Doc]:
        """Documents at positions start..stop-1, in position order."""
        for lo in range(start, stop, batch):
            rows = self._db.execute(
                "SELECT docid, title, text FROM docs WHERE pos >= ? AND pos < ? ORDER BY pos", (lo, min(stop, lo + batch))
            )
            for docid, title, text in rows:
                yield Doc(docid, text, title)

    def to_hits(self, scored: Sequence[tuple[str, float]], *, with_text: bool = True) -> list[Hit]:
        """Hits for (docid, score) pairs, in the given order, with title and text from the store."""
        if not with_text:
            return [Hit(docid, float(score)) for docid, score in scored]
        docs = self.get([docid for docid, _ in scored])
        empty = Doc("", "")
        return [Hit(docid, float(score), docs.get(docid, empty).text, docs.get(docid, empty).title) for docid, score in scored]
