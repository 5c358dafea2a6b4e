"""The search endpoint on toy stages: results equal the in-process pipeline (with each hit's final
and first-stage rank), every bad request is a 4xx that says what is wrong (a query that is not text
included, and one a stage rejects, alone even in a batch of good ones), metrics count them (a client
gone as 499), a retriever or reranker replica that dies mid-request answers 503 and is restarted,
/ready says 503 while a stage is down, concurrent requests share stage calls, API keys and the body
cap guard the door, /docs needs nothing from elsewhere, and every socket of the local Ray listens
on 127.0.0.1."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

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
    config = _toy_config(toy, tmp, f'{{crash_file: "{crash["retrieve"]}", slow_word: sleepy}}',
                         f'{{crash_file: "{crash["rerank"]}", hold_file: "{tmp / "hold-rerank"}"}}',
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
        first_stage = [h.docid for h in config.__class__(config.retriever, config.k).pipeline().search(query, 5)]
        assert [(h["rank"], h["first_stage_rank"]) for h in r.json()["hits"]] == [
            (rank, first_stage.index(docid) + 1) for rank, (docid, *_) in enumerate(got, 1)]
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
        (b'{"query": "ray \\ud800 actors"}', 422, "lone UTF-16 surrogate U+D800 at character 5"),
        (b'{"query": "\\udc00"}', 422, "lone UTF-16 surrogate U+DC00"),
        (b'{"query": "ray\\u0007"}', 422, "control character U+0007"),
        (b'{"query": "ray\\u0000"}', 422, "control character U+0000"),
        (b'{"query": "ray\x1b[2J"}', 400, "malformed JSON"),  # a raw control character is not JSON
        (b'{"query": "' + "e\u0301".encode() * 41 + b'"}', 422, "41 characters long; the limit is 40"),
    ],
)
def test_bad_requests_are_4xx_with_a_reason(endpoint, content, status, message):
    client, *_ = endpoint
    r = client.post("/search", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_query_is_nfc_normalised_at_the_door(endpoint):
    """The corpus holds "caf\u00e9" composed: the decomposed query finds it, and 40 accented letters
    are 40 characters (80 before NFC)."""
    client, *_ = endpoint
    for text in ("cafe\u0301", "caf\u00e9"):
        r = client.post("/search", json={"query": text})
        assert r.status_code == 200 and [h["docid"] for h in r.json()["hits"]] == ["d9"], r.text
    r = client.post("/search", json={"query": "e\u0301" * 40})
    assert r.status_code == 200, r.text


def test_body_not_sent_as_json_is_415(endpoint):
    client, *_ = endpoint
    r = client.post("/search", content=b'{"query": "ray"}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "must be sent as JSON" in r.json()["detail"], r.text


def test_health_openapi_and_metrics(endpoint):
    client, *_ = endpoint
    assert client.get("/health").json() == {"status": "ok", "reranker": True}
    schema = client.get("/openapi.json").json()
    assert "/search" in schema["paths"] and "SearchRequest" in str(schema)
    assert set(schema["paths"]["/search"]["post"]["responses"]) == {"200", "400", "401", "413", "415", "422", "503"}
    assert "/" not in schema["paths"] and "/ready" in schema["paths"]
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
    assert f"{stage} stage is unavailable" in r.json()["detail"] and r.headers["retry-after"] == "1"
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


def _until(check, seconds: float = 60):
    """Poll `check()` until it returns something true (returned), or fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)
    return result


def test_ready_is_503_while_a_stage_is_down(endpoint):
    """The reranker replica is killed and its successor takes long to start (the toy reranker waits
    while hold-rerank exists): /health stays 200 (liveness), /ready and reranked searches are 503 with
    Retry-After at once, searches without reranking are answered; once it has started, /ready is 200."""
    import ray

    from rankline.pipelines.serve_app import replica_actors

    client, _, _, tmp = endpoint
    assert client.get("/ready").json() == {"status": "ready", "stages": {"retrieve": True, "rerank": True}}
    hold = tmp / "hold-rerank"
    hold.write_text("")
    try:
        for actor in replica_actors("toy", "Reranker"):
            ray.kill(actor, no_restart=True)
        r = _until(lambda: (r := client.get("/ready")).status_code == 503 and r)
        assert r.json() == {"status": "not ready", "stages": {"retrieve": True, "rerank": False}}
        assert r.headers["retry-after"] == "1"
        assert client.get("/health").status_code == 200
        start = time.monotonic()
        r = client.post("/search", json={"query": "ray actors"})
        assert r.status_code == 503 and "rerank stage is unavailable" in r.json()["detail"], r.text
        assert time.monotonic() - start < 10  # not held until Serve has replaced the replica
        assert client.post("/search", json={"query": "ray actors", "rerank": False}).status_code == 200
    finally:
        hold.unlink()
    _until(lambda: client.get("/ready").status_code == 200)
    assert client.post("/search", json={"query": "ray actors"}).status_code == 200


def test_a_dead_shard_is_503_then_the_whole_index_answers(endpoint, tmp_path):
    """A pipeline file whose retriever searches a tiny vector index as 2 shard actors: its answers equal
    FAISS's unsharded flat search; a shard process killed (Ray restarts its actor) makes the next
    request a 503 with Retry-After naming the shard, never partial hits; once Ray has restarted the
    shard, the same request gets the whole index's results again."""
    import psutil
    from ray import cloudpickle, serve

    from rankline.pipelines.serve_app import build_app

    from .conftest import load_stages

    client, *_ = endpoint
    stages = load_stages("sharded_stages.py")
    cloudpickle.register_pickle_by_value(stages)
    vectors, docids = stages.tiny_index(tmp_path / "index")
    path = tmp_path / "sharded.yaml"
    path.write_text(f"""
retriever:
  factory: "{stages.__name__}:HashedQueries"
  args: ["{tmp_path / 'index'}", 2]
  kwargs: {{placement: ray, num_cpus: 0.25, wait_for_restart: false}}
  k: 10
serve: {{retriever_resources: {{CPU: 0.25}}}}
""")
    before = stages.shard_pids()
    serve.run(build_app(load_config(path)), name="sharded", route_prefix="/sharded")
    try:
        text = "lemon juice vitamin"
        (want,) = stages.unsharded(vectors, docids, stages.text_vector(text)[None], 10)

        def hits(r):
            return [h["docid"] for h in r.json()["hits"]], [h["score"] for h in r.json()["hits"]]

        r = client.post("/sharded/search", json={"query": text, "k": 10})
        assert r.status_code == 200 and hits(r) == want, r.text
        shards = stages.shard_pids() - before
        assert len(shards) == 2, shards
        victim = min(shards)
        os.kill(victim, 9)
        _until(lambda: not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE)
        r = client.post("/sharded/search", json={"query": text, "k": 10})
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert re.search(r"ShardUnavailableError: shard \d of 2 .* no partial results", r.json()["detail"]), r.text
        r = _until(lambda: (r := client.post("/sharded/search", json={"query": text, "k": 10})).status_code != 503 and r)
        assert r.status_code == 200 and hits(r) == want, r.text
        assert len(stages.shard_pids() - before - {victim}) == 2  # the shard's actor was restarted in a new process
    finally:
        serve.delete("sharded")


def test_client_gone_is_counted_as_499(endpoint):
    import httpx

    client, *_ = endpoint

    def counted(status: str) -> float:
        text = client.get("/metrics").text
        found = re.search(rf'^rankline_requests_total{{path="/search",status="{status}"}} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    before = counted("499"), counted("500")
    with pytest.raises(httpx.TimeoutException):  # the toy retriever takes 5 s over "sleepy"
        client.post("/search", json={"query": "sleepy ray"}, timeout=1)
    _until(lambda: counted("499") == before[0] + 1, 30)
    assert counted("500") == before[1]


def test_docs_need_nothing_from_elsewhere(endpoint):
    client, *_ = endpoint
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "POST /search" in r.text and "413" in r.text and "Retry-After" in r.text
    links = re.findall(r'(?:src|href)\s*=\s*["\']?([^"\'\s>]+)', r.text, re.I)
    assert links and not [link for link in links if re.match(r"(?i)(https?:)?//", link)], links
    assert "<script" not in r.text.lower() and "@import" not in r.text


def test_search_page_is_served_at_the_root(endpoint):
    client, *_ = endpoint
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html") and "<html" in r.text


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return address.is_loopback or getattr(address, "ipv4_mapped", None) is not None and address.ipv4_mapped.is_loopback


def test_every_socket_of_the_local_ray_listens_on_loopback(endpoint):
    """The session's Ray was started by start_local_ray, as `rankline serve` starts one: every
    listening socket of its processes (GCS, raylet, agents, workers, Serve's controller, proxy and
    replicas) is on the loopback interface. Other children of the test session (the browser tests'
    chromedriver listens on ::1) are held to the same rule."""
    import psutil

    processes = psutil.Process(os.getpid()).children(recursive=True)
    names, listening = set(), []
    for proc in processes:
        try:
            names.add(proc.name())
            listening += [(proc.name(), c.laddr) for c in proc.net_connections("inet") if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            continue
    assert {"gcs_server", "raylet"} <= names and any("ServeReplica" in n for n in names), names
    assert any("ServeReplica:toy:Retriever" in n for n, _ in listening), listening
    assert [(n, a) for n, a in listening if not _is_loopback(a.ip)] == []


@pytest.fixture(scope="module")
def guarded(endpoint, toy):
    """A second application, /guarded: API keys, a 300-byte body cap, retrieval batches of up to 16
    that wait 1 s to fill, and a retriever that fails a whole batch holding the word "forbidden"
    (ValueError, as a tokenizer on one bad query). Its stages reserve no CPU."""
    from ray import serve

    from rankline.pipelines.serve_app import build_app

    client, _, _, tmp = endpoint
    folder = tmp / "guarded"
    folder.mkdir()
    (folder / "keys.txt").write_text("# keys\nkey-one\nkey-two\n")
    log = folder / "retrieve.log"
    config = _toy_config(toy, folder, f'{{log_file: "{log}", reject_word: forbidden}}', "{}",
                         "{api_keys_file: keys.txt, max_body_bytes: 300, max_batch_size: 16, batch_wait_timeout_s: 1, "
                         "retriever_resources: {CPU: 0}, reranker_resources: {CPU: 0}}")
    serve.run(build_app(config), name="guarded", route_prefix="/guarded")
    yield client, config, log
    serve.delete("guarded")


AUTH = {"authorization": "Bearer key-two"}


def test_api_keys(guarded):
    client, *_ = guarded
    r = client.post("/guarded/search", json={"query": "ray"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="rankline"', r.text
    r = client.post("/guarded/search", json={"query": "ray"}, headers={"authorization": "Bearer key-three"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"], r.text
    assert client.get("/guarded/metrics").status_code == 401
    assert client.post("/guarded/search", json={"query": "ray"}, headers=AUTH).status_code == 200
    for path in ("/health", "/ready", "/docs", "/openapi.json", "/"):
        assert client.get("/guarded" + path).status_code == 200, path
    text = client.get("/guarded/metrics", headers=AUTH).text
    assert 'rankline_requests_total{path="/search",status="401"} 2.0' in text


def test_body_cap(guarded):
    client, *_ = guarded
    r = client.post("/guarded/search", content=b'{"query": "ray"' + b" " * 285 + b"}", headers={
        **AUTH, "content-type": "application/json"})
    assert r.status_code == 413 and "limit of 300 bytes (301 bytes)" in r.json()["detail"], r.text

    def chunks():
        yield b'{"query": "ray"'
        for _ in range(10):
            yield b" " * 50
        yield b"}"

    r = client.post("/guarded/search", content=chunks(), headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413 and "limit of 300 bytes" in r.json()["detail"], r.text
    r = client.post("/guarded/search", content=b'{"query": "ray"' + b" " * 284 + b"}", headers={
        **AUTH, "content-type": "application/json"})
    assert r.status_code == 200, r.text


def test_a_poison_query_fails_alone_in_its_batch(guarded):
    """16 good queries sent at once with a stage-rejected one ("forbidden": the retriever fails its
    whole batch) and two the door refuses (a lone surrogate as a JSON escape, a control character):
    each poison gets 422, every good one 200 with the in-process pipeline's hits. Repeated until the
    retriever's log shows the rejected query was batched with others (its batch retried one by one)."""
    client, config, log = guarded
    good = ["ray actors python", "dense vectors", "bm25 documents", "trec run files", "serve python models",
            "listwise language model", "documents", "ray", "caf\u00e9", "query ranks", "state between calls",
            "inverse frequency", "http", "encodes queries", "python ray", "scores per query"]
    poison = {b'{"query": "ray forbidden actors"}': "retrieve stage cannot process this query (ValueError: ",
              b'{"query": "ray \\ud800 actors"}': "lone UTF-16 surrogate U+D800",
              b'{"query": "ray\\u001b[2J actors"}': "control character U+001B"}
    bodies = [json.dumps({"query": t, "k": 3}).encode() for t in good[:8]] + list(poison) + [
        json.dumps({"query": t, "k": 3}).encode() for t in good[8:]]
    pipe = config.pipeline()
    want = {json.dumps({"query": t, "k": 3}).encode(): [h.docid for h in pipe.search(t, 3)] for t in good}
    headers = {**AUTH, "content-type": "application/json"}
    for _ in range(3):
        log.write_text("")
        with ThreadPoolExecutor(len(bodies)) as pool:
            replies = list(pool.map(lambda b: client.post("/guarded/search", content=b, headers=headers), bodies))
        for body, r in zip(bodies, replies):
            if body in poison:
                assert r.status_code == 422 and poison[body] in r.json()["detail"], (body, r.text)
            else:
                assert r.status_code == 200 and [h["docid"] for h in r.json()["hits"]] == want[body], (body, r.text)
        sizes = [len(line.split()) for line in log.read_text().splitlines()]
        if sum(sizes) > len(good) + 1:  # a batch of several failed and was retried member by member
            break
    else:
        pytest.fail(f"the rejected query was never batched with others: {sizes}")
