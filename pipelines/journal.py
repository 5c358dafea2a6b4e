"""Resumable run files: a run built query by query that survives crashes and interruptions.

Every finished query is appended at once to a journal beside the output (`OUT.partial.jsonl`: a
header line with the job's fingerprint, then one JSON line per query, each flushed and fsynced). A
job started again with the same inputs and settings (the same fingerprint) skips the queries already
there; a journal of other inputs or settings that holds finished queries is refused, never mixed in; a
last line cut short by a crash is dropped. The journal is created when the first query finishes, so a
job that fails before that (a bad option, a model that does not load) leaves nothing behind, and a
journal that holds no finished query (left by such a failure, or by a crash) never blocks a job: it
is replaced. The run file appears only when every query is done (temporary file + rename), queries in
input order, and the journal is then removed. `rankline rerank` and `rankline
batch-rerank` both write their runs this way.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import BinaryIO, Mapping, Sequence

from rankline.formats import Candidates, FormatError, write_run

JOURNAL_VERSION = 1


def journal_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


def fingerprint(lists: Sequence[Candidates], settings: Mapping[str, object]) -> str:
    """A digest of the inputs and of the settings that change the output: a journal written for
    other inputs is never resumed."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for c in lists:
        digest.update(json.dumps([c.query.qid, c.query.text, [[h.docid, h.text, h.title] for h in c.hits]]).encode())
    return digest.hexdigest()


def read_journal(path: Path, expected: str) -> tuple[dict[str, list[tuple[str, float]]], int]:
    """Finished queries of an earlier run and the byte length of the journal's complete lines (a
    last line cut short by a crash is ignored, and later cut off). A journal of another fingerprint
    is refused when it holds finished queries; one that holds none is returned empty (to be replaced)."""
    if not path.exists():
        return {}, 0
    data = path.read_bytes()
    done: dict[str, list[tuple[str, float]]] = {}
    header: object = None
    valid = 0
    for line_no, line in enumerate(data.split(b"\n"), 1):
        if valid + len(line) == len(data):  # no newline after it: the write a crash interrupted
            break
        try:
            record = json.loads(line)
            if line_no == 1:
                header = record.get("fingerprint") if isinstance(record, dict) else None
            else:
                done[record["qid"]] = [(docid, float(score)) for docid, score in record["hits"]]
        except (ValueError, KeyError, TypeError):  # ValueError: not JSON, not UTF-8, not a number
            if line_no == 1:  # an unreadable header: it matches no job
                header = None
            else:
                raise FormatError(path, line_no, "expected a JSON object {'qid', 'hits'} per line; "
                                  "delete the journal to start over") from None
        valid += len(line) + 1
    if done and header != expected:
        raise ValueError(f"{path}: journal of a job with other inputs or settings; delete it to start over, "
                         f"or rerun that job to finish it ({len(done)} queries done)")
    return done, valid


class ResumableRun:
    """The run of `lists` (each a query with its candidates) to be written to `out`; `identity` names
    the settings that determine the output (reranker, model, depth, options, ...). `done` holds the
    queries finished so far, including those of an earlier, interrupted job; use it as a context manager.
    Nothing is written before the first `add`."""

    def __init__(self, out: str | os.PathLike, lists: Sequence[Candidates], identity: Mapping[str, object]):
        self.out = Path(out)
        self.qids = [c.query.qid for c in lists]
        if len(set(self.qids)) != len(self.qids):
            twice = next(qid for i, qid in enumerate(self.qids) if qid in self.qids[:i])
            raise ValueError(f"query {twice!r} appears more than once in the candidates; each query may appear only once")
        self.fingerprint = fingerprint(lists, identity)
        self.path = journal_path(self.out)
        self.done, self._valid = read_journal(self.path, self.fingerprint)
        self.resumed = len(self.done)
        self._fh: BinaryIO | None = None

    def _open(self) -> BinaryIO:
        """The journal, opened for appending on the first finished query: an earlier job's, cut after
        its last complete line, or a new one (replacing one that held no finished query)."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.resumed:
            fh = open(self.path, "ab")
            fh.truncate(self._valid)
        else:
            fh = open(self.path, "wb")
            self._fh = fh
            self._write({"rankline_batch": JOURNAL_VERSION, "fingerprint": self.fingerprint})
        self._fh = fh
        return fh

    def _write(self, record: dict) -> None:
        fh = self._fh or self._open()
        fh.write(json.dumps(record).encode() + b"\n")
        fh.flush()
        os.fsync(fh.fileno())

    def add(self, finished: Candidates) -> None:
        """Journal a finished query, its hits in their final order (durable when this returns)."""
        hits = [(h.docid, h.score) for h in finished.hits]
        self._write({"qid": finished.query.qid, "hits": [list(h) for h in hits]})
        self.done[finished.query.qid] = hits

    def finish(self, tag: str) -> None:
        """Write the run (every query must be done) atomically and remove the journal."""
        missing = [qid for qid in self.qids if qid not in self.done]
        if missing:
            raise RuntimeError(f"{len(missing)} queries are not done yet, e.g. {missing[0]!r}")
        write_run(self.out, {qid: dict(self.done[qid]) for qid in self.qids}, tag=tag)
        self.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the journal; one that holds no finished query (this job's or an earlier one's) is
        removed, so a job that failed before finishing any query leaves nothing behind."""
        if self._fh is not None:
            self._fh.close()
        if not self.done:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "ResumableRun":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
