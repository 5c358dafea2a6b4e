"""TREC/BEIR readers and writers: real files, round trips, and strict errors that name the line."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from rankline.formats import (
    Doc,
    FormatError,
    iter_corpus,
    ranked,
    read_qrels,
    read_run,
    read_topics,
    write_corpus,
    write_qrels,
    write_run,
    write_topics,
)


def _write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# -------------------------------------------------------------------------------- real shared data


def test_real_dl2021_run_and_qrels(data_dir: Path) -> None:
    run = read_run(data_dir / "trec-dl-2021/runs/p_bm25.gz")
    assert len(run) == 477 and all(len(docs) == 100 for docs in run.values())
    assert run["2082"]["msmarco_passage_45_623131157"] == pytest.approx(19.820801)
    qrels = read_qrels(data_dir / "trec-dl-2021/qrels-pass.txt")
    assert len(qrels) == 53
    assert qrels["2082"]["msmarco_passage_02_179207466"] == 3


def test_real_dl2019_topics_and_qrels(data_dir: Path) -> None:
    topics = read_topics(data_dir / "trec-dl-2019/topics.dl19-passage.txt")
    assert len(topics) == 43 and topics["156493"] == "do goldfish grow"
    qrels = read_qrels(data_dir / "trec-dl-2019/qrels.dl19-passage.txt")
    assert sum(len(d) for d in qrels.values()) == 9260
    assert set(qrels) == set(topics)


def test_real_beir_scifact(data_dir: Path) -> None:
    root = data_dir / "beir/scifact"
    qrels = read_qrels(root / "qrels/test.tsv")
    assert len(qrels) == 300 and sum(len(d) for d in qrels.values()) == 339
    assert qrels["1"] == {"31715818": 1}
    queries = read_topics(root / "queries.jsonl")
    assert len(queries) == 1109 and queries["0"] == "0-dimensional biomaterials lack inductive properties."
    docs = list(iter_corpus(root / "corpus.jsonl"))
    assert len(docs) == 5183 and len({d.docid for d in docs}) == 5183
    assert all(isinstance(d, Doc) and d.text for d in docs)


def test_real_pyserini_passages(data_dir: Path) -> None:
    first = next(iter_corpus(data_dir / "trec-dl-2019/passages.jsonl.gz"))
    assert first.docid == "421" and first.title == ""
    assert first.text.startswith("Wi-Fi or WiFi")


# ------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", ["run.trec", "run.trec.gz"])
def test_run_round_trip_and_trec_eval_order(tmp_path: Path, name: str) -> None:
    run = {"q1": {"a": 1.0, "c": 2.5, "b": 1.0, "d": 0.1 + 0.2}, "q2": {"x": -3.0}}
    path = tmp_path / name
    write_run(path, run, tag="mine")
    assert read_run(path) == run  # scores survive exactly (repr formatting)
    with gzip.open(path, "rt") if name.endswith(".gz") else open(path) as fh:
        lines = [line.split() for line in fh]
    # score descending, ties by docid descending: b before a
    assert [(f[0], f[2], f[3], f[5]) for f in lines] == [
        ("q1", "c", "1", "mine"), ("q1", "b", "2", "mine"), ("q1", "a", "3", "mine"),
        ("q1", "d", "4", "mine"), ("q2", "x", "1", "mine"),
    ]
    assert ranked(run["q1"])[:3] == [("c", 2.5), ("b", 1.0), ("a", 1.0)]


def test_run_tabs_and_ignored_rank_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.txt", "q1\tQ0\td1\t7\t0.5\tt\n\nq1 Q0 d2 1 0.9 t\n")
    assert read_run(path) == {"q1": {"d1": 0.5, "d2": 0.9}}


def test_qrels_round_trip(tmp_path: Path) -> None:
    qrels = {"q1": {"d1": 0, "d2": 3}, "q2": {"d9": 1}}
    write_qrels(tmp_path / "q.txt", qrels)
    write_qrels(tmp_path / "q.tsv", qrels, beir=True)
    assert read_qrels(tmp_path / "q.txt") == qrels
    assert read_qrels(tmp_path / "q.tsv") == qrels
    assert (tmp_path / "q.tsv").read_text().splitlines()[0] == "query-id\tcorpus-id\tscore"


def test_qrels_accepts_integer_valued_decimals(tmp_path: Path) -> None:
    path = _write(tmp_path / "labels.txt", "q1 0 d1 1.\nq1 0 d2 2.0\n")
    assert read_qrels(path) == {"q1": {"d1": 1, "d2": 2}}


def test_topics_and_corpus_round_trip(tmp_path: Path) -> None:
    topics = {"1": "what is a kernel", "2": "ünïcode query"}
    for name in ("t.tsv", "t.jsonl", "t.jsonl.gz"):
        write_topics(tmp_path / name, topics)
        assert read_topics(tmp_path / name) == topics
    docs = [Doc("d1", "Body one", "Title"), Doc("d2", "Body two")]
    write_corpus(tmp_path / "c.jsonl", docs)
    assert list(iter_corpus(tmp_path / "c.jsonl")) == docs
    write_corpus(tmp_path / "p.jsonl.gz", docs, pyserini=True)
    assert [d.text for d in iter_corpus(tmp_path / "p.jsonl.gz")] == ["Title\nBody one", "Body two"]
    _write(tmp_path / "c.tsv", "d1\tbody\nd2\ttitle\tbody two\n")
    assert list(iter_corpus(tmp_path / "c.tsv")) == [Doc("d1", "body"), Doc("d2", "body two", "title")]


def test_write_is_atomic_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "run.trec"
    write_run(path, {"q": {"d": 1.0}})
    with pytest.raises(ValueError):
        write_run(path, {"q": {"d": "not a number"}})  # type: ignore[dict-item]
    assert read_run(path) == {"q": {"d": 1.0}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.trec"]


# ----------------------------------------------------------------------------------- strict errors


@pytest.mark.parametrize(
    ("text", "line_no", "expected"),
    [
        ("q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 0.4\n", 2, "expected 6 fields"),
        ("q1 Q0 d1 1 high t\n", 1, "numeric score"),
        ("q1 Q0 d1 first 0.5 t\n", 1, "integer rank"),
        ("q1 Q0 d1 1 nan t\n", 1, "finite score"),
        ("q1 Q0 d1 1 0.5 t\n\nq1 Q0 d1 2 0.4 t\n", 3, "appears twice"),
    ],
)
def test_run_errors_name_file_and_line(tmp_path: Path, text: str, line_no: int, expected: str) -> None:
    path = _write(tmp_path / "bad.trec", text)
    with pytest.raises(FormatError, match=expected) as info:
        read_run(path)
    assert info.value.line_no == line_no and info.value.path == str(path)
    assert str(info.value).startswith(f"{path}:{line_no}: ")


@pytest.mark.parametrize(
    ("name", "text", "line_no", "expected"),
    [
        ("q.txt", "q1 0 d1 1\nq1 0 d2\n", 2, "expected 4 fields"),
        ("q.txt", "q1 0 d1 1\nq1 0 d1 2\n", 2, "judged twice"),
        ("q.txt", "q1 0 d1 high\n", 1, "integer relevance"),
        ("q.txt", "q1 0 d1 1.5\n", 1, "integer relevance"),
        ("q.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\n", 3, "expected 3 fields"),
    ],
)
def test_qrels_errors(tmp_path: Path, name: str, text: str, line_no: int, expected: str) -> None:
    with pytest.raises(FormatError, match=expected) as info:
        read_qrels(_write(tmp_path / name, text))
    assert info.value.line_no == line_no


@pytest.mark.parametrize(
    ("name", "text", "line_no", "expected"),
    [
        ("t.tsv", "1\tok\n2 no tab here\n", 2, "qid<TAB>query text"),
        ("t.tsv", "1\tok\n1\tagain\n", 2, "appears twice"),
        ("t.jsonl", '{"_id": "1", "text": "ok"}\n{"_id": "2"\n', 2, "JSON object"),
        ("t.jsonl", '{"_id": "1"}\n', 1, "'text' field"),
    ],
)
def test_topics_errors(tmp_path: Path, name: str, text: str, line_no: int, expected: str) -> None:
    with pytest.raises(FormatError, match=expected) as info:
        read_topics(_write(tmp_path / name, text))
    assert info.value.line_no == line_no


@pytest.mark.parametrize(
    ("name", "text", "line_no", "expected"),
    [
        ("c.jsonl", '{"title": "t", "text": "x"}\n', 1, "'_id' \\(BEIR\\) or 'id'"),
        ("c.jsonl", '{"id": "1"}\n', 1, "'contents' field"),
        ("c.jsonl", "[1, 2]\n", 1, "JSON object, got list"),
        ("c.tsv", "d1 no tab\n", 1, "docid<TAB>text"),
    ],
)
def test_corpus_errors(tmp_path: Path, name: str, text: str, line_no: int, expected: str) -> None:
    with pytest.raises(FormatError, match=expected) as info:
        list(iter_corpus(_write(tmp_path / name, text)))
    assert info.value.line_no == line_no


def test_missing_file_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_run(tmp_path / "nope.trec")


def test_ranks_follow_trec_eval_single_precision_ties(tmp_path: Path) -> None:
    # 1.0 and 1.0 + 1e-9 are equal as C floats, so trec_eval ranks them by docid descending
    run = {"q": {"a": 1.0 + 1e-9, "b": 1.0, "c": 2.0}}
    assert [d for d, _ in ranked(run["q"])] == ["c", "b", "a"]
    write_run(tmp_path / "r.trec", run)
    assert [line.split()[2] for line in (tmp_path / "r.trec").read_text().splitlines()] == ["c", "b", "a"]
    assert read_run(tmp_path / "r.trec")["q"]["a"] == 1.0 + 1e-9  # full precision kept


def test_atomic_write_gives_outputs_the_usual_file_mode(tmp_path):
    import os

    from rankline.formats import atomic_write

    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "run.trec") as fh:
            fh.write("1 Q0 d1 1 1.0 t\n")
    finally:
        os.umask(umask)
    assert (tmp_path / "run.trec").stat().st_mode & 0o777 == 0o644
