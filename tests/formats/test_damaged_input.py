"""What real files bring that a clean test file does not: a UTF-8 byte-order mark (dropped by every
reader, never kept in the first id), a BOM inside a file, duplicates in candidate lists, gzip data cut
short, bytes that are not UTF-8, a folder where a file is expected, and a write that cannot happen.
Every failure names the file the user gave (and the line where it can be known)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rankline.evaluation.ci import read_labelled_qids
from rankline.evaluation.label_dist import read_label_dist
from rankline.formats import (
    FormatError,
    atomic_write,
    iter_corpus,
    open_text,
    read_candidates,
    read_qrels,
    read_run,
    read_topics,
    write_run,
)

BOM = "\ufeff"
RUN = "q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0 t\nq2 Q0 d1 1 3.0 t\n"
REQUESTS = "".join(json.dumps({"qid": q, "query": "x", "candidates": [{"docid": "d1", "score": 1.0, "text": "t"}]}) + "\n"
                   for q in ("q1", "q2"))
RANK_LLM = json.dumps([{"query": "x", "hits": [{"qid": q, "docid": "d1", "rank": 1, "score": 1.0, "content": "t"}]}
                       for q in ("q1", "q2")])


def _write(path: Path, text: str, *, bom: bool = False) -> Path:
    data = ((BOM if bom else "") + text).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


READERS = {  # name: (file name, content, reader)
    "run": ("r.trec", RUN, read_run),
    "run.gz": ("r.trec.gz", RUN, read_run),
    "trec qrels": ("q.txt", "q1 0 d1 1\nq2 0 d1 0\n", read_qrels),
    "beir qrels": ("q.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\n", read_qrels),
    "topics tsv": ("t.tsv", "q1\tfirst\nq2\tsecond\n", read_topics),
    "topics jsonl": ("t.jsonl", '{"_id": "q1", "text": "first"}\n', read_topics),
    "corpus jsonl.gz": ("c.jsonl.gz", '{"_id": "d1", "title": "", "text": "x"}\n', lambda p: list(iter_corpus(p))),
    "corpus tsv": ("c.tsv", "d1\tx\n", lambda p: list(iter_corpus(p))),
    "requests jsonl": ("c.jsonl", REQUESTS, read_candidates),
    "rank_llm json": ("c.json", RANK_LLM, read_candidates),
    "rank_llm json.gz": ("c.json.gz", RANK_LLM, read_candidates),
    "label distributions": ("l.dist", "q1 d1 0.1 0.2 0.3 0.4\n",
                            lambda p: {q: {d: p.tolist() for d, p in docs.items()} for q, docs in read_label_dist(p).items()}),
    "labelled qids": ("qids.txt", "q1\nq2\n", read_labelled_qids),
}


@pytest.mark.parametrize("kind", READERS)
def test_every_reader_drops_a_byte_order_mark(tmp_path, kind):
    """A BOM at the start of a file is not part of the first id: the file reads exactly as without it."""
    name, text, reader = READERS[kind]
    (tmp_path / "plain").mkdir()
    (tmp_path / "bom").mkdir()
    plain = reader(_write(tmp_path / "plain" / name, text))
    with_bom = reader(_write(tmp_path / "bom" / name, text, bom=True))
    assert with_bom == plain
    assert BOM not in repr(with_bom)


def test_bom_in_a_trec_run_with_topics_and_corpus(tmp_path):
    run, topics, corpus = (_write(tmp_path / "r.trec", RUN, bom=True), _write(tmp_path / "t.tsv", "q1\ta\nq2\tb\n", bom=True),
                           _write(tmp_path / "c.tsv", "d1\tone\nd2\ttwo\n", bom=True))
    assert [c.query.qid for c in read_candidates(run, topics=topics, corpus=corpus)] == ["q1", "q2"]


@pytest.mark.parametrize(("name", "text", "reader"), [
    ("r.trec", RUN + BOM + "q3 Q0 d1 1 1.0 t\n", read_run),
    ("q.txt", "q1 0 d1 1\nq2 0 d1 0\n" + BOM + "q3 0 d1 1\n", read_qrels),
    ("t.tsv", "q1\ta\nq2\tb\n" + BOM + "q3\tc\n", read_topics),
])
def test_a_byte_order_mark_inside_a_file_is_refused_at_its_line(tmp_path, name, text, reader):
    """Files joined with `cat`: the second file's BOM would make its first id another id."""
    with pytest.raises(FormatError, match="byte-order mark") as info:
        reader(_write(tmp_path / name, text))
    assert info.value.line_no == 4 if name == "r.trec" else 3


# ------------------------------------------------------------------------------- duplicates


def test_duplicate_docid_in_requests_jsonl_names_file_line_query_and_docid(tmp_path):
    lines = [{"qid": "q1", "query": "x", "candidates": [{"docid": "a", "score": 1, "text": "t"}]},
             {"qid": "q2", "query": "y", "candidates": [{"docid": "b", "score": 2, "text": "t"},
                                                        {"docid": "c", "score": 1, "text": "u"},
                                                        {"docid": "b", "score": 0, "text": "v"}]}]
    path = _write(tmp_path / "c.jsonl", "".join(json.dumps(obj) + "\n" for obj in lines))
    with pytest.raises(FormatError) as info:
        read_candidates(path)
    assert str(info.value) == f"{path}:2: query 'q2': document 'b' appears twice in its candidates (candidates 0 and 2)"


def test_duplicate_docid_in_rank_llm_json_names_entry_query_and_docid(tmp_path):
    hits = [{"qid": "q1", "docid": d, "rank": r, "score": 1.0 / r, "content": "t"} for r, d in enumerate("aba", 1)]
    path = _write(tmp_path / "c.json", json.dumps([{"query": "x", "hits": hits}]))
    with pytest.raises(FormatError, match=r"c.json: query 'q1': document 'a' appears twice in its candidates "
                                          r"\(entry 0 hits 0 and 2\)"):
        read_candidates(path)


def test_duplicate_docid_in_a_trec_run_names_its_line(tmp_path):
    run = _write(tmp_path / "r.trec", "q1 Q0 a 1 2.0 t\nq1 Q0 b 2 1.0 t\nq1 Q0 a 3 0.5 t\n")
    topics, corpus = _write(tmp_path / "t.tsv", "q1\tx\n"), _write(tmp_path / "c.tsv", "a\tone\nb\ttwo\n")
    with pytest.raises(FormatError, match=r"r.trec:3: document 'a' appears twice for query 'q1'"):
        read_candidates(run, topics=topics, corpus=corpus)


@pytest.mark.parametrize(("name", "text", "where"), [
    ("c.jsonl", REQUESTS + REQUESTS.splitlines(keepends=True)[0], r"c.jsonl:3: request: query 'q1' appears twice \(first in line 1\)"),
    ("c.json", json.dumps(json.loads(RANK_LLM) * 2), r"c.json: entry 2: query 'q1' appears twice \(first in entry 0\)"),
])
def test_a_query_twice_in_a_candidates_file_is_refused(tmp_path, name, text, where):
    with pytest.raises(FormatError, match=where):
        read_candidates(_write(tmp_path / name, text))


def test_rank_llm_hits_of_one_entry_must_share_the_qid(tmp_path):
    hits = [{"qid": q, "docid": d, "rank": 1, "score": 1.0, "content": "t"} for q, d in (("q1", "a"), ("q9", "b"))]
    with pytest.raises(FormatError, match="entry 0 hit 1: qid 'q9', but hit 0 of the entry has qid 'q1'"):
        read_candidates(_write(tmp_path / "c.json", json.dumps([{"query": "x", "hits": hits}])))


# ---------------------------------------------------------------------------- damaged bytes


def _truncated_gz(path: Path, text: str) -> Path:
    data = gzip.compress(text.encode())
    path.write_bytes(data[: len(data) // 2])
    return path


BIG_RUN = "".join(f"q{i // 100} Q0 d{i} {i % 100 + 1} {1000 - i % 100}.5 tag\n" for i in range(20000))


@pytest.mark.parametrize(("name", "reader"), [
    ("r.trec.gz", read_run),
    ("q.txt.gz", read_qrels),
    ("c.jsonl.gz", lambda p: list(iter_corpus(p))),
    ("c.json.gz", read_candidates),
])
def test_truncated_gzip_is_a_format_error_naming_the_file(tmp_path, name, reader):
    text = {"q.txt.gz": "".join(f"q{i} 0 d{i} 1\n" for i in range(20000)),
            "c.jsonl.gz": "".join(json.dumps({"_id": f"d{i}", "text": "x"}) + "\n" for i in range(20000)),
            "c.json.gz": RANK_LLM}.get(name, BIG_RUN)
    path = _truncated_gz(tmp_path / name, text)
    with pytest.raises(FormatError, match="gzip data is truncated or corrupt") as info:
        reader(path)
    assert str(info.value).startswith(f"{path}")


def test_truncated_gzip_says_how_far_it_reads(tmp_path):
    path = _truncated_gz(tmp_path / "r.trec.gz", BIG_RUN)
    with gzip.open(path, "rb") as fh:  # what zcat recovers: the complete lines before the cut
        complete = 0
        try:
            for _ in fh:
                complete += 1
        except EOFError:
            pass
    with pytest.raises(FormatError) as info:
        read_run(path)
    assert f"after {complete} complete line(s)" in str(info.value) or f"after {complete + 1} complete line(s)" in str(info.value)


def test_a_gz_name_on_data_that_is_not_gzip(tmp_path):
    path = _write(tmp_path / "r.trec", RUN).rename(tmp_path / "r.trec.gz")
    with pytest.raises(FormatError, match=r"r.trec.gz: expected gzip data \(the name ends in .gz\)"):
        read_run(path)
    (tmp_path / "empty.gz").write_bytes(b"")
    with pytest.raises(FormatError, match="empty.gz: expected gzip data .* is empty"):
        read_qrels(tmp_path / "empty.gz")


def test_gzip_data_without_the_gz_name_is_read(tmp_path):
    path = tmp_path / "r.trec"
    path.write_bytes(gzip.compress(RUN.encode()))
    assert read_run(path) == read_run(_write(tmp_path / "plain.trec", RUN))


@pytest.mark.parametrize("name", ["r.trec", "r.trec.gz"])
def test_bytes_that_are_not_utf8_are_named_by_file_and_line(tmp_path, name):
    data = b"q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0 t\nq1 Q0 d\xff3 3 0.5 t\n"
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(FormatError) as info:
        read_run(path)
    assert info.value.line_no == 3 and str(info.value).startswith(f"{path}:3: not UTF-8 text (byte 0xff")


def test_binary_and_utf16_files(tmp_path):
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(FormatError, match=r"model.bin:1: not UTF-8 text \(byte 0x89 at byte 1 of the line"):
        read_qrels(binary)
    utf16 = tmp_path / "topics.tsv"
    utf16.write_bytes("q1\tfirst\n".encode("utf-16"))
    with pytest.raises(FormatError, match=r"topics.tsv:1: not UTF-8 text \(it starts with a UTF-16 byte-order mark"):
        read_topics(utf16)


def test_a_folder_given_as_a_file(tmp_path):
    with pytest.raises(IsADirectoryError, match=f"^{tmp_path}: is a folder; expected a file$"):
        read_run(tmp_path)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        read_candidates(tmp_path)


def test_open_text_reads_and_closes_like_a_text_file(tmp_path):
    path = _write(tmp_path / "x.txt.gz", "a\nb\n", bom=True)
    with open_text(path) as fh:
        assert fh.readline() == "a\n" and fh.read() == "b\n"
    assert fh.closed


# ----------------------------------------------------------------------------------- writes


def test_a_write_that_cannot_start_names_the_target_not_its_temp_file(tmp_path, monkeypatch):
    import tempfile

    target = tmp_path / "out" / "run.trec"

    def refuse(prefix, suffix, dir):  # what a read-only folder answers
        raise PermissionError(13, "Permission denied", str(Path(dir) / f"{prefix}abc{suffix}"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError) as info:
        write_run(target, {"q": {"d": 1.0}})
    assert str(info.value) == f"{target}: cannot write: Permission denied"


def test_a_write_that_fails_at_the_end_names_the_target(tmp_path, monkeypatch):
    import errno
    import os

    target = tmp_path / "run.trec"

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", src, None, dst)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match=f"^{target}: cannot write: No space left on device$"):
        write_run(target, {"q": {"d": 1.0}})
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too


def test_writing_over_a_folder_or_through_a_file_is_refused_before_writing(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError, match=f"^{tmp_path / 'dir'}: is a folder; expected a file name to write$"):
        with atomic_write(tmp_path / "dir"):
            raise AssertionError("never reached")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=f"{tmp_path / 'file' / 'run.trec'}: cannot write: .*file is a file"):
        write_run(tmp_path / "file" / "run.trec", {"q": {"d": 1.0}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"]


# ------------------------------------------------------------------------------------ ids


@pytest.mark.parametrize(("name", "text", "message"), [
    ("c.jsonl", json.dumps({"qid": "q 1", "query": "x", "candidates": []}) + "\n", r"c.jsonl:1: request: qid 'q 1' contains whitespace"),
    ("c.jsonl", json.dumps({"qid": "", "query": "x", "candidates": []}) + "\n", r"c.jsonl:1: request: qid '' is empty"),
    ("c.jsonl", json.dumps({"qid": "q1", "query": "x", "candidates": [{"docid": "d\t1", "score": 1, "text": "t"}]}) + "\n",
     r"c.jsonl:1: candidate 0: docid 'd\\t1' contains whitespace"),
    ("c.jsonl", '{"qid": "q1", "query": "x", "candidates": [{"docid": "d1", "score": NaN, "text": "t"}]}\n',
     r"c.jsonl:1: candidate 0: expected a finite score, got nan"),
    ("c.json", json.dumps([{"query": "x", "hits": [{"qid": "q1", "docid": "d 1", "score": 1, "content": "t"}]}]),
     r"c.json: entry 0 hit 0: docid 'd 1' contains whitespace"),
    ("c.jsonl", "\n\n", r"c.jsonl: the file is empty"),
])
def test_candidates_ids_are_one_word_and_scores_finite(tmp_path, name, text, message):
    """A qid "q 1" would be written into the output run as qid "q" and a shifted line."""
    with pytest.raises(FormatError, match=message):
        read_candidates(_write(tmp_path / name, text))


def test_topics_and_corpus_ids_are_one_word(tmp_path):
    with pytest.raises(FormatError, match=r"t.jsonl:2: query id 'q 2' contains whitespace"):
        read_topics(_write(tmp_path / "t.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q 2", "text": "b"}\n'))
    with pytest.raises(FormatError, match=r"c.jsonl:1: document id 'd 1' contains whitespace"):
        list(iter_corpus(_write(tmp_path / "c.jsonl", '{"_id": "d 1", "text": "a"}\n')))


def test_writers_refuse_what_a_trec_file_cannot_hold(tmp_path):
    from rankline.formats import write_qrels

    for run, message in [({"q 1": {"d": 1.0}}, "cannot write query id 'q 1': it contains whitespace"),
                         ({"q": {"": 1.0}}, "cannot write document id '' of query 'q': it is empty"),
                         ({"q": {"d": float("nan")}}, "document 'd' has the score nan")]:
        with pytest.raises(ValueError, match=message):
            write_run(tmp_path / "r.trec", run)
    with pytest.raises(ValueError, match="cannot write document id 'd 2'"):
        write_qrels(tmp_path / "q.txt", {"q": {"d 2": 1}})
    assert list(tmp_path.iterdir()) == []


def test_a_document_twice_in_the_corpus_of_a_trec_run_is_refused(tmp_path):
    run, topics = _write(tmp_path / "r.trec", "q1 Q0 d1 1 1.0 t\n"), _write(tmp_path / "t.tsv", "q1\tx\n")
    corpus = _write(tmp_path / "c.tsv", "d1\tone text\nd2\tother\nd1\tanother text\n")
    with pytest.raises(FormatError, match=r"c.tsv: document 'd1' appears twice"):
        read_candidates(run, topics=topics, corpus=corpus)
