"""The search endpoint: a Ray Serve application with a FastAPI ingress.

    POST /search   {"query": str, "k": int = 10, "rerank": bool | null}
                   -> {"hits": [{"docid", "score", "title", "text"}], "timings_ms": {...}}
    GET  /health   GET /metrics (Prometheus text)   GET /openapi.json

Three deployments: the ingress (validation, timings, metrics; no CPU reserved), the retriever and
the reranker. The retriever and the reranker replicas each hold a copy of the pipeline's one
`Executor` (rankline.pipelines.executor) and call its `retrieve` / `rerank`, so a request for k hits
is answered exactly as `Pipeline.search(query, k)`: max(k, the pipeline's k) candidates retrieved,
the top `depth` reranked, the top k returned. The ingress gathers concurrent requests into batches
(`@serve.batch`) and sends the retriever one call per batch: an actor call per request, on a ~7 ms
retrieval, cost 1.6x throughput at 16 clients in benchmarks/serve_load.py, and keeping the retriever
out of the ingress process means a retriever that dies is a 503, as for the reranker, instead of
Serve's 500 for a dead ingress. A request alone in the ingress does not wait for a batch to fill. The
reranker batches with `@serve.batch` too, so callers share LLM forward passes. Bad input is a 4xx that
says what is wrong (400 malformed JSON, 422 everything else); a stage replica that dies, hangs past
`request_timeout_s` or sheds load turns into a 503 for the requests it held while Serve restarts it.

A query's path: `SearchAPI.search` (validation) -> `SearchAPI._retrieve` (batched) ->
`Executor.retrieve` in a Retriever replica -> `RerankerDeployment.rerank` (batched) -> `Executor.rerank`
-> `top` -> the response.
"""
import asyncio
import time
from typing import Any  # no `from __future__ import annotations`: FastAPI reads the real types

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from rankline.formats import Candidates, Query
from rankline.pipelines.actors import ray_resources
from rankline.pipelines.config import PipelineConfig, ServeSettings
from rankline.pipelines.executor import Executor, top

def _unavailable_errors() -> tuple[type[BaseException], ...]:
    """A failed call to a stage replica that is dying, restarting or overloaded: the client may retry."""
    import ray.exceptions as rex
    import ray.serve.exceptions as sex

    return (
        rex.RayActorError,
        rex.ActorUnavailableError,
        sex.BackPressureError,
        sex.DeploymentUnavailableError,
        sex.ReplicaUnavailableError,
        asyncio.TimeoutError,
    )


class HitOut(BaseModel):
    docid: str
    score: float
    title: str
    text: str


class SearchResponse(BaseModel):
    hits: list[HitOut]
    timings_ms: dict[str, float]


class ServiceMetrics:
    """Prometheus counters and per-stage latency histograms of one ingress replica."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rankline_requests", "HTTP requests by path and status", ["path", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "rankline_stage_latency_seconds",
            "Latency per pipeline stage (retrieve, rerank) and for the whole request (total)",
            ["stage"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.retrieve_waits = Counter(
            "rankline_retrieve_waits", "Search requests by the wait their retrieval batch was given to fill: "
            "'batch' (batch_wait_timeout_s, other requests in flight) or 'none' (alone in the ingress)",
            ["wait"], registry=self.registry,
        )

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


_ROUTES = frozenset({"/search", "/health", "/metrics", "/openapi.json", "/docs"})


def _metrics(request: Request) -> ServiceMetrics:
    state = request.app.state
    if getattr(state, "metrics", None) is None:
        state.metrics = ServiceMetrics()
    return state.metrics


def _describe(error: dict) -> str:
    loc = [str(p) for p in error.get("loc", ()) if p != "body"]
    field = ".".join(loc)
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return f"unknown field {field!r}"
    if kind == "missing":
        return f"missing field {field!r}"
    if not field:
        return "the body must be a JSON object, e.g. {\"query\": \"...\", \"k\": 10}"
    return f"{field}: {error.get('msg', 'invalid value')}"


def build_app(config: PipelineConfig) -> "serve.Application":
    """The Serve application for a pipeline file (bind it with `serve.run`)."""
    settings: ServeSettings = config.serve
    executor = config.pipeline().executor()
    has_reranker = executor.rerank_stage is not None
    max_k = settings.max_k

    class SearchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        query: str = Field(description=f"the query text, 1..{settings.max_query_chars} characters")
        k: int = Field(min(10, max_k), description=f"number of hits, 1..{max_k}")
        rerank: bool | None = Field(None, description="rerank the top hits (default: when the pipeline has a reranker)")

    app = FastAPI(title="rankline search", version="0.1.0")

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {})
            return JSONResponse({"detail": f"malformed JSON body: {ctx.get('error', 'cannot be parsed')}"}, 400)
        if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errors):
            return JSONResponse({"detail": "malformed JSON body: the body is empty; expected a JSON object"}, 400)
        return JSONResponse({"detail": "; ".join(_describe(e) for e in errors)}, 422)

    @app.middleware("http")
    async def _count(request: Request, call_next: Any):
        metrics = _metrics(request)
        path = request.url.path if request.url.path in _ROUTES else "other"  # bounded label values
        start = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:
            metrics.requests.labels(path, "500").inc()
            raise
        metrics.requests.labels(path, str(response.status_code)).inc()
        if request.url.path == "/search" and response.status_code == 200:
            metrics.latency.labels("total").observe(time.perf_counter() - start)
        return response

    # I/O only, like Serve's proxy: no CPU reserved; it holds many requests and forwards them in batches
    @serve.deployment(name="SearchAPI", ray_actor_options={"num_cpus": 0},
                      max_ongoing_requests=settings.max_ongoing_requests)
    @serve.ingress(app)
    class SearchAPI:
        def __init__(self, retriever: Any, reranker: Any):
            self.retriever, self.reranker = retriever, reranker
            self.searching = 0  # /search requests in this replica that have not finished retrieving
            self._retrieve.set_max_batch_size(settings.max_batch_size)

        # a batch in flight per retriever replica and one filling: the call's round trip overlaps the next batch
        @serve.batch(max_concurrent_batches=settings.retriever_replicas + 1)
        async def _retrieve(self, queries: list[Query], ks: list[int]) -> list[Candidates]:
            """One call to a retriever replica per batch of concurrent requests, not one per request."""
            return await _stage_result("retrieve", self.retriever.retrieve.remote(queries, ks), settings.request_timeout_s)

        async def _timed(self, request: Request, stage: str, work: Any) -> tuple[Any, float]:
            start = time.perf_counter()
            result = await work
            _metrics(request).latency.labels(stage).observe(time.perf_counter() - start)
            return result, (time.perf_counter() - start) * 1000

        @app.post("/search", response_model=SearchResponse)
        async def search(self, body: SearchRequest, request: Request) -> SearchResponse:
            if not body.query.strip():
                raise HTTPException(422, "query must not be empty")
            if len(body.query) > settings.max_query_chars:
                limit = settings.max_query_chars
                raise HTTPException(422, f"query is {len(body.query)} characters long; the limit is {limit}")
            if not 1 <= body.k <= max_k:
                raise HTTPException(422, f"k must be between 1 and {max_k}, got {body.k}")
            rerank = has_reranker if body.rerank is None else body.rerank
            if rerank and not has_reranker:
                raise HTTPException(422, "rerank requested but this pipeline has no reranker")
            start = time.perf_counter()
            timings: dict[str, float] = {}
            # A lone request does not wait for a batch to fill: nobody else is there to join it.
            self.searching += 1
            alone = self.searching == 1
            _metrics(request).retrieve_waits.labels("none" if alone else "batch").inc()
            self._retrieve.set_batch_wait_timeout_s(0.0 if alone else settings.batch_wait_timeout_s)
            try:
                query = Query("query", body.query)
                candidates, timings["retrieve"] = await self._timed(request, "retrieve", self._retrieve(query, body.k))
            finally:
                self.searching -= 1
            if rerank and candidates.hits:
                reranked = self.reranker.rerank.remote(candidates)
                candidates, timings["rerank"] = await self._timed(
                    request, "rerank", _stage_result("rerank", reranked, settings.request_timeout_s))
            timings["total"] = (time.perf_counter() - start) * 1000
            (hits,) = top([candidates], body.k)
            out = [HitOut(docid=h.docid, score=h.score, title=h.title, text=h.text) for h in hits]
            return SearchResponse(hits=out, timings_ms=timings)

        @app.get("/health")
        async def health(self) -> dict:
            return {"status": "ok", "reranker": has_reranker}

        @app.get("/metrics", response_class=PlainTextResponse)
        async def metrics(self, request: Request) -> PlainTextResponse:
            return PlainTextResponse(_metrics(request).text(), media_type="text/plain; version=0.0.4")

    retriever = RetrieverDeployment.options(
        num_replicas=settings.retriever_replicas, ray_actor_options=ray_resources(settings.retriever_resources),
    ).bind(executor.retrieve_stage, executor.rerank_stage)
    reranker = None
    if has_reranker:
        # A reranker replica accepts two full batches at once (Serve's default of 5 would cap every batch at 5).
        reranker = RerankerDeployment.options(
            num_replicas=settings.reranker_replicas, ray_actor_options=ray_resources(settings.reranker_resources),
            max_ongoing_requests=2 * settings.max_batch_size,
        ).bind(executor, settings.max_batch_size, settings.batch_wait_timeout_s)
    return SearchAPI.bind(retriever, reranker)


async def _resolve(response: Any) -> Any:
    return await response


async def _stage_result(stage: str, response: Any, timeout_s: float) -> Any:
    """The result of a call to a stage replica; a replica that is dying, restarting, overloaded or
    slower than `timeout_s` becomes a 503 that says which stage, and the call is cancelled."""
    try:
        return await asyncio.wait_for(_resolve(response), timeout_s)
    except _unavailable_errors() as exc:
        response.cancel()
        reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
        raise HTTPException(503, f"the {stage} stage is unavailable ({reason}); retry shortly",
                            headers={"Retry-After": "1"}) from None


# One retriever replica is the executor itself; each `retrieve` call is a whole batch the ingress gathered.
RetrieverDeployment = serve.deployment(name="Retriever")(Executor)


@serve.deployment(name="Reranker")
class RerankerDeployment:
    """One reranker replica: the executor's `rerank`, with concurrent requests batched into one call
    so that they share forward passes."""

    def __init__(self, executor: Executor, max_batch_size: int, batch_wait_timeout_s: float):
        self.executor = executor
        self.rerank.set_max_batch_size(max_batch_size)
        self.rerank.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch
    async def rerank(self, lists: list[Candidates]) -> list[Candidates]:
        return await asyncio.to_thread(self.executor.rerank, lists)
