"""Batch reranking on a Ray actor pool: output equal to reranking in-process, a reranker actor
killed mid-job changes nothing, an interrupted job resumes without recomputing finished queries."""
from __future__ import annotations

import json

import pytest

from rankline.formats import Query, write_run
from rankline.pipelines.batch import BatchSettings, batch_rerank
from rankline.pipelines.journal import fingerprint, journal_path, read_journal
from rankline.pipelines.pipeline import Factory

pytestmark = pytest.mark.ray

TEXTS = ["ray actors python", "documents query ranks", "dense vectors", "bm25 documents", "serve models",
         "language model rerankers", "trec run files", "actors state calls"]
SETTINGS = BatchSettings(workers=2, queries_per_task=2, resources={"CPU": 0.5}, progress=False)


@pytest.fixture(scope="module")
def requests(toy):
    retriever = toy.KeywordRetriever()
    queries = [Query(f"q{i}", text) for i, text in enumerate(TEXTS)]
    return [(q, retriever.search(q, 8)) for q in queries]


@pytest.fixture(scope="module")
def expected(toy, requests, tmp_path_factory):
    """The run written from the same reranker called in this process."""
    out = tmp_path_factory.mktemp("expected") / "expected.trec"
    reranked = toy.ShortestFirstReranker().rerank_batch([q for q, _ in requests], [h for _, h in requests])
    write_run(out, {q.qid: {h.docid: h.score for h in hits} for (q, _), hits in zip(requests, reranked)})
    return out.read_bytes()


def test_batch_equals_in_process(ray_session, toy, requests, expected, tmp_path):
    out = tmp_path / "out.trec"
    report = batch_rerank(requests, Factory(toy.ShortestFirstReranker), out, settings=SETTINGS)
    assert out.read_bytes() == expected
    assert (report.queries, report.resumed, report.reranked) == (8, 0, 8)
    assert not journal_path(out).exists()


def test_killed_reranker_actor_mid_job_same_output(ray_session, toy, requests, expected, tmp_path):
    crash, log = tmp_path / "crash", tmp_path / "log"
    reranker = Factory(toy.ShortestFirstReranker, kwargs={"crash_file": str(crash), "log_file": str(log)})
    finished = []

    def kill_after_two(qid: str) -> None:  # the next call in either actor kills its process
        finished.append(qid)
        if len(finished) == 2:
            crash.write_text("")

    out = tmp_path / "out.trec"
    batch_rerank(requests, reranker, out, settings=SETTINGS, on_query_done=kill_after_two)
    assert not crash.exists(), "the reranker actor was never killed"
    assert out.read_bytes() == expected


def test_interrupted_job_resumes_without_recomputing(ray_session, toy, requests, expected, tmp_path):
    log = tmp_path / "log"
    reranker = Factory(toy.ShortestFirstReranker, kwargs={"log_file": str(log)})
    settings = BatchSettings(workers=1, queries_per_task=1, progress=False)
    out = tmp_path / "out.trec"

    def interrupt_after_three(qid: str) -> None:
        if len(journal_path(out).read_text().splitlines()) == 4:  # header + 3 queries
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        batch_rerank(requests, reranker, out, settings=settings, on_query_done=interrupt_after_three)
    assert not out.exists()
    first = [json.loads(line)["qid"] for line in journal_path(out).read_text().splitlines()[1:]]
    assert len(first) == 3
    with open(journal_path(out), "a") as fh:  # a crash in the middle of writing a line
        fh.write('{"qid": "q7", "hits": [["d')
    log.write_text("")
    report = batch_rerank(requests, reranker, out, settings=settings)
    assert (report.resumed, report.reranked) == (3, 5)
    # No finished query is computed again and every other one is. (The interrupted job's actor is
    # killed asynchronously and may still log the query it had in flight after the log was reset,
    # so the unfinished queries are compared as a set.)
    logged = log.read_text().split()
    assert not set(logged) & set(first)
    assert set(logged) == {q.qid for q, _ in requests if q.qid not in first}
    assert out.read_bytes() == expected


def test_truncated_journal_line_is_cut_before_appending(ray_session, toy, requests, expected, tmp_path):
    out = tmp_path / "out.trec"
    path = journal_path(out)
    fp = fingerprint(requests, {})
    header = json.dumps({"rankline_batch": 1, "fingerprint": fp}) + "\n"
    path.write_text(header + '{"qid": "q0", "hits": [["d')
    assert read_journal(path, fp) == ({}, len(header))
    journaled = []

    def check(qid: str) -> None:  # every line parses: the fragment was cut off, not appended to
        journaled.append([json.loads(line) for line in path.read_text().splitlines()][-1]["qid"])

    batch_rerank(requests, Factory(toy.ShortestFirstReranker), out, settings=SETTINGS, on_query_done=check)
    assert sorted(journaled) == sorted(q.qid for q, _ in requests)
    assert out.read_bytes() == expected


def test_journal_of_other_inputs_is_not_resumed(ray_session, toy, requests, tmp_path):
    out = tmp_path / "out.trec"
    journal_path(out).write_text(json.dumps({"rankline_batch": 1, "fingerprint": "other"}) + "\n")
    with pytest.raises(ValueError, match="other inputs or settings; delete it"):
        batch_rerank(requests, Factory(toy.ShortestFirstReranker), out, settings=SETTINGS, identity={"depth": 3})


def test_an_unfinished_run_is_never_written(requests, tmp_path):
    from rankline.pipelines.journal import ResumableRun

    out = tmp_path / "out.trec"
    with ResumableRun(out, requests, {}) as run:
        query, hits = requests[0]
        run.add(query.qid, hits)
        with pytest.raises(RuntimeError, match=f"{len(requests) - 1} queries are not done yet"):
            run.finish("rankline")
    assert not out.exists() and journal_path(out).exists()
    with pytest.raises(ValueError, match="appears more than once in the candidates"):
        ResumableRun(out, [requests[0], requests[0]], {})


@pytest.mark.slow
def test_batch_rerank_cli_equals_rerank_cli_with_first(ray_session, fixtures_dir, tmp_path):
    """`rankline batch-rerank` on 2 workers writes the same bytes as single-process `rankline rerank`
    (FIRST, the tiny Llama of the parity fixtures, every case of cases.jsonl)."""
    from rankline.pipelines.cli import main

    cases, model = fixtures_dir / "first-parity" / "cases.jsonl", fixtures_dir / "first-parity" / "tiny-llama"
    common = ["--reranker", "first", "--model", str(model), "--device", "cpu", "--depth", "30", "--batch-size", "2"]
    assert main(["rerank", "--candidates", str(cases), *common, "--out", str(tmp_path / "single.trec")]) == 0
    assert main(["batch-rerank", "--run", str(cases), *common, "--workers", "2", "--out", str(tmp_path / "ray.trec")]) == 0
    single = (tmp_path / "single.trec").read_bytes()
    assert single and (tmp_path / "ray.trec").read_bytes() == single
