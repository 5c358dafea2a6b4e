"""The rerank job: in-process and on a Ray actor pool it writes the same run as the reranker called
directly; a reranker actor killed mid-job changes nothing; an interrupted job resumes without
recomputing finished queries."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from rankline.formats import Candidates, Query, write_run
from rankline.pipelines.actors import RayExecutor, RayOptions
from rankline.pipelines.batch import rerank_job
from rankline.pipelines.executor import Executor, Factory, RerankStage
from rankline.pipelines.journal import ResumableRun, fingerprint, journal_path, read_journal

pytestmark = pytest.mark.ray

TEXTS = ["ray actors python", "documents query ranks", "dense vectors", "bm25 documents", "serve models",
         "language model rerankers", "trec run files", "actors state calls"]
ON_RAY = RayOptions(num_replicas=2, resources={"CPU": 0.5})


def _on_ray(reranker: Factory, opts: RayOptions = ON_RAY) -> RayExecutor:
    return RayExecutor(Executor(rerank=RerankStage(reranker, depth=8)), opts)


@pytest.fixture(scope="module")
def lists(toy):
    retriever = toy.KeywordRetriever()
    return [Candidates(q, tuple(retriever.search(q, 8))) for q in (Query(f"q{i}", t) for i, t in enumerate(TEXTS))]


@pytest.fixture(scope="module")
def expected(toy, lists, tmp_path_factory):
    """The run written from the same reranker called directly in this process."""
    out = tmp_path_factory.mktemp("expected") / "expected.trec"
    reranked = toy.ShortestFirstReranker().rerank_batch(lists)
    write_run(out, {c.query.qid: {h.docid: h.score for h in hits} for c, hits in zip(lists, reranked)})
    return out.read_bytes()


def test_in_process_and_actor_pool_write_the_same_run(ray_session, toy, lists, expected, tmp_path):
    in_process = Executor(rerank=RerankStage(toy.ShortestFirstReranker(), depth=8))
    report = rerank_job(lists, in_process, tmp_path / "local.trec", queries_per_task=3, progress=False)
    assert (tmp_path / "local.trec").read_bytes() == expected
    assert (report.queries, report.resumed, report.reranked) == (8, 0, 8)
    report = rerank_job(lists, _on_ray(Factory(toy.ShortestFirstReranker)), tmp_path / "ray.trec",
                        queries_per_task=2, progress=False)
    assert (tmp_path / "ray.trec").read_bytes() == expected
    assert (report.queries, report.resumed, report.reranked) == (8, 0, 8)
    assert not journal_path(tmp_path / "ray.trec").exists()


def test_killed_reranker_actor_mid_job_same_output(ray_session, toy, lists, expected, tmp_path):
    crash, log = tmp_path / "crash", tmp_path / "log"
    reranker = Factory(toy.ShortestFirstReranker, kwargs={"crash_file": str(crash), "log_file": str(log)})
    finished = []

    def kill_after_two(qid: str) -> None:  # the next call in either actor kills its process
        finished.append(qid)
        if len(finished) == 2:
            crash.write_text("")

    out = tmp_path / "out.trec"
    rerank_job(lists, _on_ray(reranker), out, queries_per_task=2, progress=False, on_query_done=kill_after_two)
    assert not crash.exists(), "the reranker actor was never killed"
    assert out.read_bytes() == expected


def test_interrupted_job_resumes_without_recomputing(ray_session, toy, lists, expected, tmp_path):
    log = tmp_path / "log"
    reranker = Factory(toy.ShortestFirstReranker, kwargs={"log_file": str(log)})
    one_worker = RayOptions(num_replicas=1)
    out = tmp_path / "out.trec"

    def interrupt_after_three(qid: str) -> None:
        if len(journal_path(out).read_text().splitlines()) == 4:  # header + 3 queries
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rerank_job(lists, _on_ray(reranker, one_worker), out, progress=False, on_query_done=interrupt_after_three)
    assert not out.exists()
    first = [json.loads(line)["qid"] for line in journal_path(out).read_text().splitlines()[1:]]
    assert len(first) == 3
    with open(journal_path(out), "a") as fh:  # a crash in the middle of writing a line
        fh.write('{"qid": "q7", "hits": [["d')
    log.write_text("")
    report = rerank_job(lists, _on_ray(reranker, one_worker), out, progress=False)
    assert (report.resumed, report.reranked) == (3, 5)
    # No finished query is computed again and every other one is. (The interrupted job's actor is
    # killed asynchronously and may still log the query it had in flight after the log was reset,
    # so the unfinished queries are compared as a set.)
    logged = log.read_text().split()
    assert not set(logged) & set(first)
    assert set(logged) == {c.query.qid for c in lists if c.query.qid not in first}
    assert out.read_bytes() == expected


def test_truncated_journal_line_is_cut_before_appending(ray_session, toy, lists, expected, tmp_path):
    out = tmp_path / "out.trec"
    path = journal_path(out)
    fp = fingerprint(lists, {})
    header = json.dumps({"rankline_batch": 1, "fingerprint": fp}) + "\n"
    path.write_text(header + '{"qid": "q0", "hits": [["d')
    assert read_journal(path, fp) == ({}, len(header))
    journaled = []

    def check(qid: str) -> None:  # every line parses: the fragment was cut off, not appended to
        journaled.append([json.loads(line) for line in path.read_text().splitlines()][-1]["qid"])

    rerank_job(lists, _on_ray(Factory(toy.ShortestFirstReranker)), out, queries_per_task=2, progress=False,
               on_query_done=check)
    assert sorted(journaled) == sorted(c.query.qid for c in lists)
    assert out.read_bytes() == expected


def test_journal_of_other_inputs_is_not_resumed(toy, lists, tmp_path):
    out = tmp_path / "out.trec"
    journal_path(out).write_text(json.dumps({"rankline_batch": 1, "fingerprint": "other"}) + "\n"
                                 + json.dumps({"qid": "q0", "hits": [["d", 1.0]]}) + "\n")
    with pytest.raises(ValueError, match="other inputs or settings; delete it"):
        rerank_job(lists, Executor(rerank=RerankStage(toy.ShortestFirstReranker())), out, identity={"depth": 3})


def test_an_unfinished_run_is_never_written(lists, tmp_path):
    out = tmp_path / "out.trec"
    with ResumableRun(out, lists, {}) as run:
        run.add(lists[0])
        with pytest.raises(RuntimeError, match=f"{len(lists) - 1} queries are not done yet"):
            run.finish("rankline")
    assert not out.exists() and journal_path(out).exists()
    with pytest.raises(ValueError, match="appears more than once in the candidates"):
        ResumableRun(out, [lists[0], lists[0]], {})


@pytest.mark.slow
def test_batch_rerank_cli_equals_rerank_cli_with_first(ray_session, fixtures_dir, tmp_path):
    """`rankline batch-rerank` on 2 workers writes the same bytes as in-process `rankline rerank`
    (FIRST, the tiny Llama of the parity fixtures, every case of cases.jsonl, the top 30 of each)."""
    from rankline.pipelines.cli import main

    cases, model = fixtures_dir / "first-parity" / "cases.jsonl", fixtures_dir / "first-parity" / "tiny-llama"
    common = ["--candidates", str(cases), "--reranker", "first", "--model", str(model), "--device", "cpu",
              "--depth", "30", "--batch-size", "2"]
    assert main(["rerank", *common, "--queries-per-task", "1", "--out", str(tmp_path / "single.trec")]) == 0
    assert main(["batch-rerank", *common, "--workers", "2", "--out", str(tmp_path / "ray.trec")]) == 0
    single = (tmp_path / "single.trec").read_bytes()
    assert single and (tmp_path / "ray.trec").read_bytes() == single


def test_the_journal_appears_with_the_first_finished_query_and_an_empty_one_is_replaced(lists, tmp_path):
    out = tmp_path / "out.trec"
    with ResumableRun(out, lists, {}):
        assert not journal_path(out).exists()  # a job that fails here (a model that does not load) leaves nothing
    assert list(tmp_path.iterdir()) == []
    journal_path(out).write_text(json.dumps({"rankline_batch": 1, "fingerprint": "an earlier, failed job"}) + "\n")
    with ResumableRun(out, lists, {}) as run:  # holds no finished query: never blocks a job
        assert run.resumed == 0
        run.add(lists[0])
    header, first = [json.loads(line) for line in journal_path(out).read_text().splitlines()]
    assert header["fingerprint"] == fingerprint(lists, {}) and first["qid"] == lists[0].query.qid
    with ResumableRun(out, lists, {}) as run:
        assert run.resumed == 1


def test_a_worker_that_fails_is_one_line_and_leaves_no_journal(ray_session, fixtures_dir, tmp_path, capsys):
    """A model folder that does not load fails inside the Ray actor: the user sees the worker's error
    in one line (not the actor's traceback), exit 2, and nothing beside the output."""
    from rankline.pipelines.cli import main

    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "vocab_size": "many"}')
    cases = tmp_path / "cases.jsonl"
    cases.write_text((fixtures_dir / "first-parity" / "cases.jsonl").read_text().splitlines()[0] + "\n")
    assert main(["batch-rerank", "--candidates", str(cases), "--model", str(broken), "--device", "cpu",
                 "--out", str(tmp_path / "out.trec")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"rankline batch-rerank: error: model '{broken}': cannot load it: ")
    assert "ray::" not in errors[0] and "Traceback" not in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.jsonl", "model"]


def test_retrieve_job_of_a_pipeline_file_with_a_sharded_retriever(ray_session, tmp_path):
    """`rankline retrieve --pipeline` (the batch job that retrieves) over a pipeline file whose retriever
    searches a tiny vector index as 3 shard actors writes the run of FAISS's unsharded flat search,
    and releases the shard actors."""
    from ray import cloudpickle

    from rankline.formats import read_run
    from rankline.pipelines.cli import main

    from .conftest import load_stages

    stages = load_stages("sharded_stages.py")
    cloudpickle.register_pickle_by_value(stages)
    vectors, docids = stages.tiny_index(tmp_path / "index")
    topics = {f"q{i}": text for i, text in enumerate(TEXTS)}
    (tmp_path / "topics.tsv").write_text("".join(f"{qid}\t{text}\n" for qid, text in topics.items()))
    (tmp_path / "pipe.yaml").write_text(f"""retriever:
  factory: "{stages.__name__}:HashedQueries"
  args: ["{tmp_path / 'index'}", 3]
  kwargs: {{placement: ray, num_cpus: 0.25}}
""")
    before = stages.shard_pids()
    out = tmp_path / "run.trec"
    assert main(["retrieve", "--pipeline", str(tmp_path / "pipe.yaml"), "--topics", str(tmp_path / "topics.tsv"),
                 "--k", "7", "--batch-size", "3", "--out", str(out)]) == 0
    want = stages.unsharded(vectors, docids, np.stack([stages.text_vector(t) for t in topics.values()]), 7)
    assert read_run(out) == {qid: dict(zip(ids, scores)) for qid, (ids, scores) in zip(topics, want)}
    assert out.read_text().split("\n")[0].split()[-1] == "rankline-pipeline"
    deadline = time.monotonic() + 30
    while stages.shard_pids() - before:  # the command closed the retriever: its shard actors go
        assert time.monotonic() < deadline, "the shard actors outlived the command"
        time.sleep(0.2)


@pytest.mark.parametrize("where", [[], ["{tmp}/index", "--pipeline", "{tmp}/pipe.yaml"]])
def test_retrieve_takes_an_index_or_a_pipeline_file(tmp_path, capsys, where):
    from rankline.pipelines.cli import main

    argv = [a.format(tmp=tmp_path) for a in where] + ["--topics", str(tmp_path / "t.tsv"), "--out", str(tmp_path / "run")]
    assert main(["retrieve", *argv]) == 2
    assert capsys.readouterr().err == ("rankline retrieve: error: give an index folder DIR or --pipeline FILE "
                                       "(the pipeline file names the index)\n")
    assert not (tmp_path / "run").exists()
