"""Readers and writers for the TREC and BEIR file formats.

Runs: ``qid Q0 docid rank score tag`` (space or tab separated, plain or .gz); the rank column is
checked to be an integer but otherwise ignored, as trec_eval does. Qrels: TREC ``qid iter docid rel``
or BEIR TSV with the ``query-id corpus-id score`` header. Topics: ``qid<TAB>text`` or BEIR
``queries.jsonl``. Corpora: BEIR ``corpus.jsonl`` ({"_id","title","text"}), pyserini-style
``{"id","contents"}`` jsonl(.gz) and ``docid<TAB>text`` / ``docid<TAB>title<TAB>text`` TSV.

Parsing is strict: a malformed line raises :class:`FormatError` naming the file, the line and what
was expected, and nothing is silently skipped (only blank lines carry no record). A UTF-8 byte-order
mark at the start of a file is dropped (see `open_text`); one inside a file, which would turn its
line's id into another id, is an error. Writers are atomic.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
from collections import deque
from itertools import groupby, islice
from typing import Iterable, Iterator, Mapping

from rankline.formats.io import FormatError, TextReader, atomic_write, open_text
from rankline.formats.order import ranked
from rankline.formats.records import Doc

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]
PathLike = str | os.PathLike

BEIR_QRELS_HEADER = ("query-id", "corpus-id", "score")
BOM = "\ufeff"


def _lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline) for every non-blank line of `path`."""
    with open_text(path) as fh:  # drops a byte-order mark at the start of the file
        for line_no, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                if line[0] == BOM:
                    raise _bom_error(path, line_no)
                yield line_no, line


_WHITESPACE = re.compile(r"\s")


def id_problem(value: str) -> str | None:
    """Why `value` cannot be a query or document id in a TREC file (None if it can): an id is one
    non-empty word, as the whitespace-separated TREC formats need (an id "q 1" would be written as
    the id "q" followed by a shifted line)."""
    if not value:
        return "is empty"
    if _WHITESPACE.search(value):
        return "contains whitespace"
    return None


def _check_id(path: PathLike, line_no: int | None, kind: str, value: str) -> str:
    problem = id_problem(value)
    if problem is not None:
        raise FormatError(path, line_no, f"{kind} id {value!r} {problem}; ids must be one word (TREC files split on "
                          "whitespace)")
    return value


def _bom_error(path: PathLike, line_no: int) -> FormatError:
    """A byte-order mark after the start of a file: kept, it would make the line's id another id."""
    return FormatError(path, line_no, "a byte-order mark (U+FEFF) starts this line, inside the file "
                       "(were files with byte-order marks joined?); remove it")


def _is_jsonl(path: PathLike) -> bool:
    name = os.fspath(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith((".jsonl", ".json"))


def _json_object(path: PathLike, line_no: int, line: str) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise FormatError(path, line_no, f"expected one JSON object per line ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise FormatError(path, line_no, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _json_str(path: PathLike, line_no: int, obj: dict, key: str, *, required: bool = True) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise FormatError(path, line_no, f"expected a {key!r} field, found keys {sorted(obj)}")
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key in ("_id", "id"):
        return str(value)  # numeric ids (BEIR files sometimes have them) are ids all the same
    if not isinstance(value, str):
        raise FormatError(path, line_no, f"expected {key!r} to be a string, got {type(value).__name__}")
    return value


def _parse_relevance(path: PathLike, line_no: int, token: str) -> int:
    """An integer relevance grade; integer-valued decimals such as ``1.`` or ``2.0`` are accepted."""
    try:
        return int(token)
    except ValueError:
        pass
    try:
        value = float(token)
    except ValueError:
        value = math.nan
    if not value.is_integer():
        raise FormatError(path, line_no, f"expected an integer relevance grade, got {token!r}")
    return int(value)


# --------------------------------------------------------------------------------------------- runs
#
# The TREC run and qrels readers take a file a block of whole lines at a time (64K characters, so
# what a block makes stays in the CPU cache). A block is split into its fields with one C call
# (str.split) after a sentinel field is put at the end of every line; the sentinel falling exactly
# after every n-th field proves that every line of the block has n fields. Scores, ranks and grades
# are then converted column by column with map(float) / map(int), and each query's documents become
# a dict in one call, its length proving no document came twice. Any doubt (a line with another
# number of fields, a blank line, a value that does not convert, a score that is not finite, a
# document twice, a byte-order mark) sends the whole block, untouched, to the line-by-line reader,
# which finds the exact line and says what is wrong; so every line is checked the same way either
# path, and errors read as they always did.

_BLOCK_CHARS = 1 << 16
_SENTINEL = "\x00"  # a field of its own at the end of every line (a block that has one goes line by line)
_END = "\n" + _SENTINEL + "\n"


def _blocks(fh: TextReader) -> Iterator[tuple[int, str, int]]:
    """(line number of its first line, block, number of lines) for consecutive blocks of whole lines
    of `fh`, each ending in a newline (one is added to a last line that has none)."""
    line_no, pending = 1, []
    while text := fh.read(_BLOCK_CHARS):
        end = text.rfind("\n") + 1
        if not end:  # no line ends in this piece: keep it (a long line, or a file with no newlines)
            pending.append(text)
            continue
        if pending:
            pending.append(text[:end])
            block = "".join(pending)
            pending = []
        else:
            block = text[:end]
        if end < len(text):
            pending.append(text[end:])
        n_lines = block.count("\n")
        yield line_no, block, n_lines
        line_no += n_lines
    if pending:
        block = "".join(pending) + "\n"
        yield line_no, block, block.count("\n")


def _columns(block: str, n_lines: int, n_fields: int) -> list[str] | None:
    """The fields of every line of the `n_lines` lines of `block`, in order (n_fields + 1 per line,
    the last the sentinel), or None unless every line has exactly `n_fields` whitespace-separated
    fields (a blank line has none) and the block has no character equal to the sentinel."""
    if _SENTINEL in block:
        return None
    fields = block.replace("\n", _END).split()
    width = n_fields + 1
    # n_lines sentinels in all, at every width-th place: n_fields fields before each
    if len(fields) != width * n_lines or fields[n_fields::width].count(_SENTINEL) != n_lines:
        return None
    return fields


def _all_int(tokens: list[str]) -> bool:
    """Whether int() takes every token (as the line-by-line readers require)."""
    limit = sys.get_int_max_str_digits() or sys.maxsize  # int() refuses more digits than this
    if "".join(tokens).isdecimal() and max(map(len, tokens), default=0) <= limit:
        return True  # only decimal digits, and no more of them than int() reads
    try:
        deque(map(int, tokens), maxlen=0)  # signs, underscores, surrounding spaces: int() decides
    except ValueError:
        return False
    return True


def _add_block(table: dict[str, dict], qids: list[str], docids: list[str], values: list) -> bool:
    """Add one block's (qid, docid, value) columns to `table`, or leave `table` untouched and return
    False if a qid starts with a byte-order mark, or a document comes twice for a query (within the
    block, or already in `table`)."""
    parts: dict[str, dict] = {}
    pairs = zip(docids, values)
    for qid, members in groupby(qids):
        n = len(list(members))
        docs = dict(islice(pairs, n))
        if len(docs) != n or qid[0] == BOM:
            return False
        earlier = parts.get(qid)
        if earlier is None:
            parts[qid] = docs
        elif earlier.keys().isdisjoint(docs):
            earlier.update(docs)
        else:
            return False
    for qid, docs in parts.items():
        old = table.get(qid)
        if old is not None and not old.keys().isdisjoint(docs):
            return False
    for qid, docs in parts.items():
        old = table.get(qid)
        if old is None:
            table[qid] = docs
        else:
            old.update(docs)
    return True


def read_run(path: PathLike) -> Run:
    """Read a TREC run into ``{qid: {docid: score}}``.

    Every line must have six whitespace-separated fields ``qid Q0 docid rank score tag`` with an
    integer rank and a finite score; a docid twice for the same query is an error.
    """
    run: Run = {}
    with open_text(path) as fh:
        for line_no, block, n_lines in _blocks(fh):
            if not _add_run_block(run, block, n_lines):
                _add_run_lines(path, run, line_no, block)
    return run


def _add_run_block(run: Run, block: str, n_lines: int) -> bool:
    """The fast path of read_run for one block; False (and `run` untouched) if any line is in doubt."""
    fields = _columns(block, n_lines, 6)
    if fields is None:
        return False
    try:
        scores = list(map(float, fields[4::7]))
    except ValueError:
        return False
    if not _all_int(fields[3::7]):
        return False
    total = sum(scores)
    if total - total != 0.0:  # a NaN or infinite score (or finite ones summing past the largest float)
        return False
    return _add_block(run, fields[0::7], fields[2::7], scores)


def _add_run_lines(path: PathLike, run: Run, first_line_no: int, block: str) -> None:
    """read_run line by line over one block: every line checked on its own, errors naming it."""
    qid, docs = None, {}
    for line_no, line in enumerate(block.split("\n")[:-1], first_line_no):
        try:  # the fast path; any problem is diagnosed by _run_line_error
            q, _, docid, rank, score, _ = line.split()
            value = float(score)
            int(rank)
        except ValueError:
            if not line.strip():
                continue
            raise _run_line_error(path, line_no, line) from None
        if value - value != 0.0:  # NaN or infinite
            raise FormatError(path, line_no, f"expected a finite score in field 5, got {score!r}")
        if q != qid:
            if q[0] == BOM:  # a BOM inside the file (open_text drops the one at its start)
                raise _bom_error(path, line_no)
            qid, docs = q, run.setdefault(q, {})
        if docid in docs:
            raise FormatError(path, line_no, f"document {docid!r} appears twice for query {qid!r}")
        docs[docid] = value


def _run_line_error(path: PathLike, line_no: int, line: str) -> FormatError:
    fields = line.split()
    if len(fields) != 6:
        return FormatError(path, line_no, f"expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}")
    try:
        float(fields[4])
    except ValueError:
        return FormatError(path, line_no, f"expected a numeric score in field 5, got {fields[4]!r}")
    return FormatError(path, line_no, f"expected an integer rank in field 4, got {fields[3]!r}")


def write_run(path: PathLike, run: Mapping[str, Mapping[str, float]], tag: str = "rankline") -> None:
    """Write ``{qid: {docid: score}}`` as a TREC run, ranks numbered in trec_eval order (atomic)."""
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"run tag must be one non-empty word, got {tag!r}")
    _check_ids(path, run)
    with atomic_write(path) as fh:
        for qid, docs in run.items():
            for rank, (docid, score) in enumerate(ranked(docs), 1):
                score = float(score)
                if score - score != 0.0:
                    raise ValueError(f"{path}: query {qid!r}: document {docid!r} has the score {score!r}; "
                                     "a run holds finite scores")
                fh.write(f"{qid} Q0 {docid} {rank} {score!r} {tag}\n")


def _check_ids(path: PathLike, table: Mapping[str, Mapping[str, object]]) -> None:
    """Refuse, before writing `path`, a query or document id that a TREC file cannot hold."""
    for qid, docs in table.items():
        problem = id_problem(qid)
        if problem is not None:
            raise ValueError(f"{path}: cannot write query id {qid!r}: it {problem}")
        for docid in docs:
            problem = id_problem(docid)
            if problem is not None:
                raise ValueError(f"{path}: cannot write document id {docid!r} of query {qid!r}: it {problem}")


# -------------------------------------------------------------------------------------------- qrels


def read_qrels(path: PathLike) -> Qrels:
    """Read relevance judgments into ``{qid: {docid: grade}}``.

    TREC qrels have four fields ``qid iter docid rel``; a file whose first line is the BEIR header
    ``query-id corpus-id score`` is read as BEIR TSV with three fields per line. A (qid, docid)
    pair judged twice is an error. Read a block at a time as read_run is.
    """
    qrels: Qrels = {}
    layout = None
    with open_text(path) as fh:
        for line_no, block, n_lines in _blocks(fh):
            if layout is None:
                first = _first_line(block)
                if first is None:  # only blank lines so far
                    continue
                index, line, end = first
                if tuple(line.split()) == BEIR_QRELS_HEADER:
                    layout = 3, 1, "'query-id corpus-id score' (BEIR TSV)"
                    line_no, block, n_lines = line_no + index + 1, block[end:], n_lines - index - 1
                else:
                    layout = 4, 2, "'qid iter docid rel' (TREC qrels)"
            if not _add_qrels_block(qrels, block, n_lines, layout[0], layout[1]):
                _add_qrels_lines(path, qrels, line_no, block, *layout)
    return qrels


def _first_line(block: str) -> tuple[int, str, int] | None:
    """(index, text, end offset) of the first non-blank line of `block`; None if all are blank."""
    start = index = 0
    while start < len(block):
        end = block.index("\n", start) + 1
        if block[start:end].strip():
            return index, block[start:end], end
        start, index = end, index + 1
    return None


def _add_qrels_block(qrels: Qrels, block: str, n_lines: int, n_fields: int, doc_col: int) -> bool:
    """The fast path of read_qrels for one block; False (and `qrels` untouched) if any line is in doubt."""
    fields = _columns(block, n_lines, n_fields)
    if fields is None:
        return False
    width = n_fields + 1
    try:
        grades = list(map(int, fields[n_fields - 1::width]))  # "1." or "2.0" go the careful way
    except ValueError:
        return False
    return _add_block(qrels, fields[0::width], fields[doc_col::width], grades)


def _add_qrels_lines(path: PathLike, qrels: Qrels, first_line_no: int, block: str, n_fields: int, doc_col: int,
                     layout: str) -> None:
    """read_qrels line by line over one block: every line checked on its own, errors naming it."""
    for line_no, line in enumerate(block.split("\n")[:-1], first_line_no):
        if not line.strip():
            continue
        if line[0] == BOM:
            raise _bom_error(path, line_no)
        fields = line.split()
        if len(fields) != n_fields:
            raise FormatError(path, line_no, f"expected {n_fields} fields {layout}, got {len(fields)}")
        qid, docid = fields[0], fields[doc_col]
        grade = _parse_relevance(path, line_no, fields[-1])
        docs = qrels.setdefault(qid, {})
        if docid in docs:
            raise FormatError(path, line_no, f"document {docid!r} judged twice for query {qid!r}")
        docs[docid] = grade


def write_qrels(path: PathLike, qrels: Mapping[str, Mapping[str, int]], *, beir: bool = False) -> None:
    """Write judgments as TREC qrels (``qid 0 docid rel``) or, with ``beir=True``, BEIR TSV (atomic)."""
    _check_ids(path, qrels)
    with atomic_write(path) as fh:
        if beir:
            fh.write("\t".join(BEIR_QRELS_HEADER) + "\n")
        for qid, docs in qrels.items():
            for docid, grade in docs.items():
                fh.write(f"{qid}\t{docid}\t{int(grade)}\n" if beir else f"{qid} 0 {docid} {int(grade)}\n")


# ------------------------------------------------------------------------------------------- topics


def read_topics(path: PathLike) -> dict[str, str]:
    """Read queries into ``{qid: text}`` from ``qid<TAB>text`` TSV or BEIR ``queries.jsonl``."""
    topics: dict[str, str] = {}
    jsonl = _is_jsonl(path)
    for line_no, line in _lines(path):
        if jsonl:
            obj = _json_object(path, line_no, line)
            qid, text = _json_str(path, line_no, obj, "_id"), _json_str(path, line_no, obj, "text")
        else:
            qid, sep, text = line.partition("\t")
            if not sep or not qid.strip() or not text.strip():
                raise FormatError(path, line_no, "expected 'qid<TAB>query text'")
            qid = qid.strip()
        _check_id(path, line_no, "query", qid)
        if qid in topics:
            raise FormatError(path, line_no, f"query {qid!r} appears twice")
        topics[qid] = text
    return topics


def write_topics(path: PathLike, topics: Mapping[str, str]) -> None:
    """Write ``{qid: text}`` as BEIR queries.jsonl when the name ends in .jsonl(.gz), else TSV (atomic)."""
    jsonl = _is_jsonl(path)
    with atomic_write(path) as fh:
        for qid, text in topics.items():
            if jsonl:
                fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
            else:
                if "\t" in text or "\n" in text:
                    raise ValueError(f"query {qid!r}: a TSV topic text cannot contain a tab or newline")
                fh.write(f"{qid}\t{text}\n")


# ------------------------------------------------------------------------------------------- corpus


def iter_corpus(path: PathLike) -> Iterator[Doc]:
    """Stream the documents of a corpus file.

    JSONL (.jsonl/.json, optionally .gz): BEIR records ``{"_id","title","text"}`` or pyserini records
    ``{"id","contents"}`` (title empty). Anything else is TSV: ``docid<TAB>text`` or
    ``docid<TAB>title<TAB>text``.
    """
    jsonl = _is_jsonl(path)
    for line_no, line in _lines(path):
        if jsonl:
            obj = _json_object(path, line_no, line)
            if "_id" in obj:
                doc = Doc(
                    _json_str(path, line_no, obj, "_id"),
                    _json_str(path, line_no, obj, "text"),
                    _json_str(path, line_no, obj, "title", required=False),
                )
            elif "id" in obj:
                doc = Doc(
                    _json_str(path, line_no, obj, "id"),
                    _json_str(path, line_no, obj, "contents"),
                    _json_str(path, line_no, obj, "title", required=False),
                )
            else:
                raise FormatError(path, line_no, f"expected an '_id' (BEIR) or 'id' (pyserini) field, found keys {sorted(obj)}")
        else:
            fields = line.split("\t")
            if len(fields) == 2:
                doc = Doc(fields[0], fields[1])
            elif len(fields) == 3:
                doc = Doc(fields[0], fields[2], fields[1])
            else:
                raise FormatError(path, line_no, f"expected 'docid<TAB>text' or 'docid<TAB>title<TAB>text', got {len(fields)} fields")
        _check_id(path, line_no, "document", doc.docid)
        yield doc


def write_corpus(path: PathLike, records: Iterable[Doc], *, pyserini: bool = False) -> None:
    """Write documents as BEIR corpus.jsonl or, with ``pyserini=True``, ``{"id","contents"}`` jsonl (atomic).

    The pyserini layout has no title field, so the title is prepended to the contents.
    """
    with atomic_write(path) as fh:
        for rec in records:
            if pyserini:
                contents = f"{rec.title}\n{rec.text}" if rec.title else rec.text
                obj = {"id": rec.docid, "contents": contents}
            else:
                obj = {"_id": rec.docid, "title": rec.title, "text": rec.text}
            fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
