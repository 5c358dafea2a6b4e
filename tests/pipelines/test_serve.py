"""The search endpoint on toy stages: results equal the in-process pipeline, every bad request is
a 4xx that says what is wrong, metrics count them, and a reranker replica that dies mid-request
answers 503 and is restarted."""
from __future__ import annotations

import socket
import time

import pytest

from rankline.pipelines.config import load_config

pytestmark = pytest.mark.ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint(ray_session, toy, tmp_path_factory):
    from ray import serve

    from rankline.pipelines.serve_app import build_app

    tmp = tmp_path_factory.mktemp("serve")
    crash = tmp / "crash-next-call"
    cfg_path = tmp / "toy.yaml"
    cfg_path.write_text(
        f"""
retriever:
  factory: "{toy.__name__}:KeywordRetriever"
  k: 8
reranker:
  factory: "{toy.__name__}:ShortestFirstReranker"
  kwargs: {{crash_file: "{crash}"}}
  depth: 3
serve:
  max_k: 5
  max_query_chars: 40
"""
    )
    config = load_config(cfg_path)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(config), name="toy", route_prefix="/")
    import httpx

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client, config, crash
    serve.shutdown()


def test_search_matches_in_process_pipeline(endpoint):
    client, config, _ = endpoint
    pipe = config.pipeline()
    for query, k, rerank in [("ray actors python", 3, None), ("documents query ranks", 5, False), ("vectors", 2, True)]:
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
    client, _, _ = endpoint
    r = client.post("/search", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_health_openapi_and_metrics(endpoint):
    client, _, _ = endpoint
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


def test_dead_reranker_replica_gives_503_then_recovers(endpoint):
    client, _, crash = endpoint
    crash.write_text("")
    r = client.post("/search", json={"query": "ray actors"})
    assert r.status_code == 503, r.text
    assert "rerank stage is unavailable" in r.json()["detail"]
    deadline = time.monotonic() + 120
    while True:  # Serve restarts the replica; requests meanwhile wait for it or get 503, never 500
        r = client.post("/search", json={"query": "ray actors"})
        assert r.status_code in (200, 503), r.text
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert r.status_code == 200
