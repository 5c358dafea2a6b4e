"""The search endpoint on toy stages: results equal the in-process pipeline, every bad request is
a 4xx that says what is wrong, metrics count them, a retriever or reranker replica that dies
mid-request answers 503 and is restarted, and concurrent requests share stage calls."""
from __future__ import annotations

import re
import socket
import time

import pytest

from rankline.pipelines.config import load_config

pytestmark = pytest.mark.ray


def _toy_config(toy, folder, retriever_kwargs: str, reranker_kwargs: str, serve_section: str):
    """The retriever's k is below the depth: a request for k hits retrieves max(k, 2) candidates, as
    the pipeline does, not max(k, depth)."""
    path = folder / "toy.yaml"
    path.write_text(
        f"""
retriever:
  factory: "{toy.__name__}:KeywordRetriever"
  kwargs: {retriever_kwargs}
  k: 2
reranker:
  factory: "{toy.__name__}:ShortestFirstReranker"
  kwargs: {reranker_kwargs}
  depth: 3
serve: {serve_section}
"""
    )
    return load_config(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint(ray_session, toy, tmp_path_factory):
    from ray import serve

    from rankline.pipelines.serve_app import build_app

    tmp = tmp_path_factory.mktemp("serve")
    crash = {stage: tmp / f"crash-{stage}" for stage in ("retrieve", "rerank")}
    config = _toy_config(toy, tmp, f'{{crash_file: "{crash["retrieve"]}"}}', f'{{crash_file: "{crash["rerank"]}"}}',
                         "{max_k: 5, max_query_chars: 40}")
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(config), name="toy", route_prefix="/")
    import httpx

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client, config, crash, tmp
    serve.shutdown()


def test_search_matches_in_process_pipeline(endpoint):
    client, config, *_ = endpoint
    pipe = config.pipeline()
    # "documents query ranks" retrieves d6, d3, d4, d5, d8: for k=2 the reranker receives d6, d3 (max(2,
    # 2) candidates) and keeps them; for k=3 it receives d6, d3, d4 and puts d4 (shortest) first.
    assert [h.docid for h in pipe.search("documents query ranks", 2)] == ["d6", "d3"]
    assert [h.docid for h in pipe.search("documents query ranks", 3)] == ["d4", "d6", "d3"]
    cases = [("ray actors python", 3, None), ("documents query ranks", 5, False), ("vectors", 2, True),
             ("documents query ranks", 2, None), ("documents query ranks", 3, True), ("documents query ranks", 5, None)]
    for query, k, rerank in cases:
        body = {"query": query, "k": k} | ({} if rerank is None else {"rerank": rerank})
        r = client.post("/search", json=body)
        assert r.status_code == 200, r.text
        got = [(h["docid"], h["score"], h["title"], h["text"]) for h in r.json()["hits"]]
        want_pipe = pipe if rerank is not False else config.__class__(config.retriever, config.k).pipeline()
        want = [(h.docid, h.score, h.title, h.text) for h in want_pipe.search(query, k)]
        assert got == want
        assert set(r.json()["timings_ms"]) == {"retrieve", "total"} | ({"rerank"} if rerank is not False else set())


@pytest.mark.parametrize(
    "content, status, message",
    [
        (b'{"query": "ray", "k": ', 400, "malformed JSON"),
        (b"", 400, "malformed JSON"),
        (b'{"k": 3}', 422, "missing field 'query'"),
        (b'{"query": "   "}', 422, "must not be empty"),
        (b'{"query": "' + b"x" * 41 + b'"}', 422, "limit is 40"),
        (b'{"query": "ray", "k": 0}', 422, "between 1 and 5"),
        (b'{"query": "ray", "k": 6}', 422, "between 1 and 5"),
        (b'{"query": "ray", "k": "3"}', 422, "k: Input should be a valid integer"),
        (b'{"query": "ray", "k": 2.5}', 422, "k: Input should be a valid integer"),
        (b'{"query": 7}', 422, "query: Input should be a valid string"),
        (b'{"query": "ray", "rerank": "yes"}', 422, "rerank: Input should be a valid boolean"),
        (b'{"query": "ray", "top": 3}', 422, "unknown field 'top'"),
        (b'["ray"]', 422, "must be a JSON object"),
    ],
)
def test_bad_requests_are_4xx_with_a_reason(endpoint, content, status, message):
    client, *_ = endpoint
    r = client.post("/search", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_health_openapi_and_metrics(endpoint):
    client, *_ = endpoint
    assert client.get("/health").json() == {"status": "ok", "reranker": True}
    schema = client.get("/openapi.json").json()
    assert "/search" in schema["paths"] and "SearchRequest" in str(schema)
    client.post("/search", json={"query": "ray"})
    client.post("/search", json={"query": ""})
    assert client.get("/no/such/path").status_code == 404
    text = client.get("/metrics").text
    assert 'rankline_requests_total{path="other",status="404"}' in text
    assert 'rankline_requests_total{path="/search",status="200"}' in text
    assert 'rankline_requests_total{path="/search",status="422"}' in text
    assert 'rankline_stage_latency_seconds_count{stage="rerank"}' in text


@pytest.mark.parametrize("stage", ["retrieve", "rerank"])
def test_dead_stage_replica_gives_503_then_recovers(endpoint, stage):
    client, _, crash, _ = endpoint
    crash[stage].write_text("")
    r = client.post("/search", json={"query": "ray actors"})
    assert r.status_code == 503, r.text
    assert f"{stage} stage is unavailable" in r.json()["detail"]
    assert not crash[stage].exists()  # the replica did die
    deadline = time.monotonic() + 120
    while True:  # Serve restarts the replica; requests meanwhile wait for it or get 503, never 500
        r = client.post("/search", json={"query": "ray actors"})
        assert r.status_code in (200, 503), r.text
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert r.status_code == 200


def test_concurrent_requests_share_stage_calls(endpoint, toy):
    """Four callers at once: with room for 4 per batch and a long wait, the ingress hands the
    retriever several of them in one search_batch call, Serve hands the reranker all four in one
    rerank_batch call, and each caller still gets its own in-process answer."""
    from concurrent.futures import ThreadPoolExecutor

    from ray import serve

    from rankline.pipelines.serve_app import build_app

    client, _, _, tmp = endpoint
    folder = tmp / "batched"
    folder.mkdir()
    logs = {stage: folder / f"{stage}.log" for stage in ("retrieve", "rerank")}
    config = _toy_config(toy, folder, f'{{log_file: "{logs["retrieve"]}"}}', f'{{log_file: "{logs["rerank"]}"}}',
                         "{max_batch_size: 4, batch_wait_timeout_s: 30}")
    serve.run(build_app(config), name="batched", route_prefix="/batched")
    texts = ["ray actors python", "dense vectors", "bm25 documents", "trec run files"]
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda t: client.post("/batched/search", json={"query": t, "k": 3}), texts))
    sizes = {stage: [len(line.split()) for line in log.read_text().splitlines()] for stage, log in logs.items()}
    assert sizes["rerank"] == [4]
    # the first caller may find the ingress empty and go alone (see test_lone_request_does_not_wait_for_a_batch)
    assert sum(sizes["retrieve"]) == 4 and len(sizes["retrieve"]) < 4, sizes
    pipe = config.pipeline()
    for text, reply in zip(texts, replies):
        assert reply.status_code == 200, reply.text
        assert [h["docid"] for h in reply.json()["hits"]] == [h.docid for h in pipe.search(text, 3)]
    serve.delete("batched")


def test_lone_request_does_not_wait_for_a_batch(endpoint, toy):
    """With a 30 s batch wait, the ingress gives the retrieval batch of a request alone in the replica
    no wait at all (counted in /metrics)."""
    from ray import serve

    from rankline.pipelines.serve_app import build_app

    client, _, _, tmp = endpoint
    folder = tmp / "lone"
    folder.mkdir()
    config = _toy_config(toy, folder, "{}", "{}", "{batch_wait_timeout_s: 30}")
    serve.run(build_app(config), name="lone", route_prefix="/lone")
    for _ in range(2):  # one after the other: each is alone
        r = client.post("/lone/search", json={"query": "ray actors", "rerank": False})
        assert r.status_code == 200, r.text
    waits = dict(re.findall(r'^rankline_retrieve_waits_total\{wait="(\w+)"\} (\S+)$', client.get("/lone/metrics").text, re.M))
    assert waits == {"none": "2.0"}
    serve.delete("lone")
