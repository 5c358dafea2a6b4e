"""Candidate readers: the three formats give the same lists; malformed input names file and line."""
from __future__ import annotations

import gzip
import json

import pytest

from rankline.formats import FormatError, Hit, Query, read_candidates


def test_requests_jsonl_reads_the_parity_fixture(fixtures_dir):
    lists = read_candidates(fixtures_dir / "first-parity" / "cases.jsonl")
    assert [c.query.qid for c in lists][:2] == ["s01-n1", "s02-n7"]
    first = lists[0]
    assert first.query == Query("s01-n1", "what is the capital of france [2]")
    assert first.hits[0].docid == "s01-n1-b7a436-0" and first.hits[0].title == "Vienna Seine"
    assert len(lists[-1].hits) == 100


def test_rank_llm_json_reads_dl19(data_dir):
    lists = read_candidates(data_dir / "trec-dl-2019" / "candidates" / "BM25.top100.json.gz")
    assert len(lists) == 43
    assert lists[0].query == Query("264014", "how long is life cycle of flea")
    assert lists[0].hits[0].docid == "5611210"
    assert lists[0].hits[0].score == pytest.approx(15.7806, abs=1e-4)
    assert all(len(c.hits) == 100 for c in lists)


def test_three_formats_agree(tmp_path):
    hits = [("d2", 3.0, "two"), ("d1", 3.0, "one"), ("d3", 1.5, "three")]  # tie: trec_eval order is d2, d1
    requests = tmp_path / "req.jsonl"
    requests.write_text(json.dumps({"qid": "q1", "query": "what", "candidates": [
        {"docid": d, "score": s, "text": t} for d, s, t in hits]}) + "\n")
    rank_llm = tmp_path / "rl.json.gz"
    with gzip.open(rank_llm, "wt") as fh:
        json.dump([{"query": "what", "hits": [{"qid": "q1", "docid": d, "rank": r, "score": s, "content": t}
                                              for r, (d, s, t) in enumerate(hits, 1)]}], fh)
    run, topics, corpus = tmp_path / "run.trec", tmp_path / "topics.tsv", tmp_path / "corpus.jsonl"
    run.write_text("".join(f"q1 Q0 {d} {r} {s} bm25\n" for r, (d, s, _) in enumerate(hits, 1)))
    topics.write_text("q1\twhat\n")
    corpus.write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, _, t in hits))
    expected = (Query("q1", "what"), tuple(Hit(d, s, t) for d, s, t in hits))
    for lists in (read_candidates(requests), read_candidates(rank_llm),
                  read_candidates(run, topics=topics, corpus=corpus)):
        assert [(c.query, c.hits) for c in lists] == [expected]


def test_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"qid": "q", "query": "x", "candidates": [{"docid": "d"}]}\n')
    with pytest.raises(FormatError, match=r"bad.jsonl:1: candidate 0: expected a 'score' field"):
        read_candidates(bad)
    run, topics, corpus = tmp_path / "r.trec", tmp_path / "t.tsv", tmp_path / "c.tsv"
    run.write_text("q1 Q0 d1 1 1.0 x\n")
    topics.write_text("q2\tother\n")
    corpus.write_text("d1\ttext\n")
    with pytest.raises(ValueError, match="no text for 1 queries"):
        read_candidates(run, topics=topics, corpus=corpus)
    with pytest.raises(ValueError, match="both --topics and --corpus"):
        read_candidates(run, topics=topics)
    text = tmp_path / "x.txt"
    text.write_text("q1 Q0 d1 1 1.0 x\n")
    with pytest.raises(FormatError, match="--topics and --corpus"):
        read_candidates(text)
