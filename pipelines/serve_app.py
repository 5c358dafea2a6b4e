"""The search endpoint: a Ray Serve application with a FastAPI ingress.

    POST /search   {"query": str, "k": int = 10, "rerank": bool | null}
                   -> {"hits": [{"docid", "score", "title", "text", "rank", "first_stage_rank"}],
                       "timings_ms": {...}}
    GET  /health (liveness)   GET /ready (readiness)   GET /metrics (Prometheus text)
    GET  /openapi.json   GET /docs (the same, as a self-contained HTML page)
    GET  /         the search page (rankline.pipelines.search_page)

Three deployments: the ingress (validation, timings, metrics; no CPU reserved), the retriever and
the reranker. The retriever and the reranker replicas each hold a copy of the pipeline's one
`Executor` (rankline.pipelines.executor), its stage built when the replica starts (so a replica is
running only once it can answer), and call its `retrieve` / `rerank`, so a request for k hits is
answered exactly as `Pipeline.search(query, k)` on the NFC form of its query: max(k, the pipeline's
k) candidates retrieved, the top `depth` reranked, the top k returned. The ingress gathers
concurrent requests into batches (`@serve.batch`) and sends the retriever one call per batch: an
actor call per request, on a ~7 ms retrieval, cost 1.6x throughput at 16 clients in
benchmarks/serve_load.py, and keeping the retriever out of the ingress process means a retriever
that dies is a 503, as for the reranker, instead of Serve's 500 for a dead ingress. A request alone
in the ingress does not wait for a batch to fill. The reranker batches with `@serve.batch` too, so
callers share LLM forward passes.

No request changes what another gets:
- the door (serve_http.Door, clean_query) answers what is wrong with a request itself before it
  joins a batch: 401 without a valid API key (where the service has keys), 413 for a body above
  `max_body_bytes`, 415 for a body not sent as JSON, 400 for malformed JSON, 422 for everything
  else (missing/empty/too long query, a query that is not text: a lone surrogate or a control
  character, k out of range, wrong types, unknown fields);
- a batched stage call that fails is retried member by member in the replica (`each_alone`), so
  only a member that fails alone gets an error: 422 when the stage rejects its input (a
  ValueError), 503 otherwise;
- a stage replica that dies, hangs or sheds load is a 503 with Retry-After for the calls it held,
  and the stage is then "down" (`StageGate`): while none of its replicas answers a ping, its calls
  get 503 at once instead of waiting for Serve to restart it;
- a shard of a sharded retriever (`retriever.shards`) whose actor died fails the requests that need
  it at once (`PipelineConfig.served`): 503 with Retry-After, never partial hits, while Ray restarts
  the shard; once it is back, requests get the whole index's results again.

A query's path: `SearchAPI.search` (validation) -> `SearchAPI._retrieve` (batched) -> `StageGate.call`
-> `RetrieverDeployment.retrieve` -> `Executor.retrieve`; then `StageGate.call` ->
`RerankerDeployment.rerank` (batched) -> `Executor.rerank` -> `top` -> the response.
"""
import asyncio
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence  # no `from __future__ import annotations`: FastAPI reads the real types

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from rankline.formats import Candidates, Query
from rankline.pipelines.actors import ray_resources
from rankline.pipelines.config import PipelineConfig, ServeSettings
from rankline.pipelines.executor import Executor, RerankStage, RetrieveStage, materialize, top
from rankline.pipelines.search_page import search_page
from rankline.pipelines.serve_http import ApiKeys, Door, clean_query, docs_page, printable

logger = logging.getLogger("rankline.serve")

RETRY_AFTER_S = 1  # what a 503 tells the client to wait before retrying
STAGE_HEALTH_CHECK_PERIOD_S = 2  # Serve's health check of a stage replica: a dead one is replaced sooner


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
    rank: int = Field(description="1-based rank in the answer")
    first_stage_rank: int = Field(description="1-based rank in the retriever's list, before reranking "
                                  "(equal to rank when the answer is not reranked)")


class SearchResponse(BaseModel):
    hits: list[HitOut]
    timings_ms: dict[str, float]


class ErrorOut(BaseModel):
    detail: str = Field(description="what is wrong, in one line")


class ReadyOut(BaseModel):
    status: str
    stages: dict[str, bool]


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": 'Bearer realm="rankline"', "schema": {"type": "string"}}}


def _search_answers(max_body_bytes: int) -> dict:
    """Every answer of POST /search but 200, as /openapi.json (and /docs) list them."""
    return {
        400: {"model": ErrorOut, "description": "malformed JSON body (or an empty one)"},
        401: {"model": ErrorOut, "description": "missing or invalid API key, where the service has api_keys_file "
              "(send Authorization: Bearer KEY)", "headers": _WWW_AUTHENTICATE},
        413: {"model": ErrorOut, "description": f"the body is larger than max_body_bytes ({max_body_bytes} bytes)"},
        415: {"model": ErrorOut, "description": "the body is not sent as JSON (content-type: application/json)"},
        422: {"model": ErrorOut, "description": "an invalid request: missing, empty or too long query; a query "
              "that is not text (a lone UTF-16 surrogate, a control character other than tab, line feed and "
              "carriage return); k out of range; a field of the wrong type; an unknown field; rerank asked of a "
              "pipeline without a reranker; or a query a stage rejects (its ValueError)"},
        503: {"model": ErrorOut, "description": "a stage is unavailable (its replica died, is being restarted, "
              "does not answer, is overloaded or took longer than request_timeout_s) or failed on this request; "
              "retry after Retry-After seconds", "headers": _RETRY_AFTER},
    }


class ServiceMetrics:
    """Prometheus counters and per-stage latency histograms of one ingress replica."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rankline_requests", "HTTP requests by path and status (499: the client went away before its answer)",
            ["path", "status"], registry=self.registry,
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
        self.stage_errors = Counter(
            "rankline_stage_errors", "Requests a stage failed on its own, while the rest of its batch was answered, "
            "by stage and by answer (422: the stage rejected the input, 503: it failed)",
            ["stage", "status"], registry=self.registry,
        )

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


_ROUTES = frozenset({"/", "/search", "/health", "/ready", "/metrics", "/openapi.json", "/docs"})
_OPEN_ROUTES = frozenset({"/", "/health", "/ready", "/openapi.json", "/docs"})  # no API key asked


def _metrics_of(app: Any) -> ServiceMetrics:
    state = app.state
    if getattr(state, "metrics", None) is None:
        state.metrics = ServiceMetrics()
    return state.metrics


def _count(app: Any, path: str, status: str, seconds: float) -> None:
    metrics = _metrics_of(app)
    metrics.requests.labels(path, status).inc()
    if path == "/search" and status == "200":
        metrics.latency.labels("total").observe(seconds)


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


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


# -- a failure of one member of a batch ---------------------------------------------------------------

@dataclass(frozen=True)
class StageError:
    """What a stage replica answers for one member of a batch that failed on its own."""

    bad_input: bool  # the stage rejected this input (422); otherwise it failed on it (503)
    message: str


def each_alone(run: Callable[[list], list], items: Sequence) -> list:
    """`run(items)`; if that raises, `run([item])` for each item, so that one item that fails does
    not fail the others: the result of each item, or a StageError for each that failed alone (bad
    input when it failed with a ValueError, whatever else was in its batch)."""
    items = list(items)
    try:
        return list(run(items))
    except Exception as exc:  # noqa: BLE001 - any failure of a batch is retried member by member
        if len(items) == 1:
            return [_stage_error(exc)]
        logger.warning("a batch of %d failed (%s); retrying its members one by one", len(items), type(exc).__name__)
    results: list = []
    for item in items:
        try:
            results.append(run([item])[0])
        except Exception as exc:  # noqa: BLE001
            results.append(_stage_error(exc))
    return results


def _stage_error(exc: Exception) -> StageError:
    message = printable(f"{type(exc).__name__}: {exc}")
    logger.warning("stage call failed on one input: %s", message)
    return StageError(isinstance(exc, ValueError), message)


# -- calls to a stage ---------------------------------------------------------------------------------

class StageGate:
    """Calls from the ingress to one stage deployment, failing fast while the stage is down.

    A call still pending after `ping_timeout_s` makes the gate ping the stage (one ping at a time,
    shared by all calls; a stage that answered anything within the last `ping_timeout_s` needs no
    ping). A ping not answered within `ping_timeout_s` means no replica can take a call (dead,
    restarting, hung): the stage is down, its pending calls are cancelled with 503, and new calls get
    503 at once, until a ping, sent every half second meanwhile, is answered again. Without this a
    call to a dead stage waits in Serve's router until Serve has noticed and replaced the replica."""

    def __init__(self, stage: str, handle: Any, ping_timeout_s: float, request_timeout_s: float):
        self.stage, self.handle = stage, handle
        self.ping_timeout_s, self.request_timeout_s = ping_timeout_s, request_timeout_s
        self.answered_at = -math.inf  # time.monotonic() of the stage's last answer
        self.down = False
        self._ping: asyncio.Future | None = None
        self._recovery: asyncio.Future | None = None

    def unavailable(self, reason: str) -> HTTPException:
        return HTTPException(503, f"the {self.stage} stage is unavailable ({reason}); retry shortly",
                             headers={"Retry-After": str(RETRY_AFTER_S)})

    async def call(self, method: str, *args: Any) -> Any:
        if self.down:
            self._watch()
            raise self.unavailable("no replica answers; Serve is replacing it")
        response = getattr(self.handle, method).remote(*args)
        task = asyncio.ensure_future(_resolve(response))
        deadline = time.monotonic() + self.request_timeout_s
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self.unavailable(f"timed out after {self.request_timeout_s:g} s")
                done, _ = await asyncio.wait({task}, timeout=min(self.ping_timeout_s, left))
                if done:
                    break
                if not await self.alive():
                    raise self.unavailable("no replica answers; Serve is replacing it")
            try:
                result = task.result()
            except _unavailable_errors() as exc:
                self._ping_now()  # the replica died: does another one answer?
                raise self.unavailable(type(exc).__name__) from None
            except Exception as exc:  # noqa: BLE001 - a stage's failure is a 503, never a 500
                raise self.unavailable(f"failed: {printable(type(exc).__name__)}") from None
            self.answered_at = time.monotonic()
            return result
        finally:
            if not task.done():
                task.cancel()
                response.cancel()

    async def alive(self) -> bool:
        """Whether the stage answers: it did within the last ping_timeout_s, or a ping says so."""
        if self.down:
            self._watch()
            return False
        if time.monotonic() - self.answered_at < self.ping_timeout_s:
            return True
        return await asyncio.shield(self._ping_now())

    def _ping_now(self) -> asyncio.Future:
        """The ping in flight, or a new one."""
        if self._ping is None or self._ping.done():
            self._ping = asyncio.ensure_future(self._ping_once())
        return self._ping

    async def _ping_once(self) -> bool:
        response = self.handle.ping.remote()
        try:
            await asyncio.wait_for(_resolve(response), self.ping_timeout_s)
        except Exception:  # noqa: BLE001 - no answer, whatever the reason
            response.cancel()
            if not self.down:
                logger.warning("the %s stage does not answer a ping within %g s: down", self.stage, self.ping_timeout_s)
            self.down = True
            self._watch()
            return False
        if self.down:
            logger.warning("the %s stage answers again: up", self.stage)
        self.answered_at, self.down = time.monotonic(), False
        return True

    def _watch(self) -> None:
        """Ping the down stage every half second until it answers."""
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.ensure_future(self._recover())

    async def _recover(self) -> None:
        while self.down:
            await asyncio.sleep(0.5)
            await self._ping_once()


async def _resolve(response: Any) -> Any:
    return await response


def replica_actors(app_name: str, deployment: str) -> list:
    """The Ray actors of the running replicas of `deployment` ("SearchAPI", "Retriever" or
    "Reranker") of the Serve application `app_name`, e.g. to kill one in a fault test."""
    import ray

    prefix = f"SERVE_REPLICA::{app_name}#{deployment}#"
    return [ray.get_actor(a["name"], namespace=a["namespace"])
            for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]


def _answer_for(stage: str, error: StageError, request: Request) -> HTTPException:
    status = 422 if error.bad_input else 503
    _metrics_of(request.app).stage_errors.labels(stage, str(status)).inc()
    if error.bad_input:
        return HTTPException(422, f"the {stage} stage cannot process this query ({error.message})")
    return HTTPException(503, f"the {stage} stage failed on this request ({error.message}); retry shortly",
                         headers={"Retry-After": str(RETRY_AFTER_S)})


# -- the application ----------------------------------------------------------------------------------

def build_app(config: PipelineConfig) -> "serve.Application":
    """The Serve application for a pipeline file (bind it with `serve.run`). Reads the API keys
    file, if the settings name one (a bad one fails here)."""
    settings: ServeSettings = config.serve
    executor = config.served().pipeline().executor()
    has_reranker = executor.rerank_stage is not None
    max_k = settings.max_k
    default_k = min(10, max_k)
    keys = ApiKeys.read(settings.api_keys_file) if settings.api_keys_file else None

    class SearchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        query: str = Field(description=f"the query text, 1..{settings.max_query_chars} characters once in NFC; "
                           "no lone surrogates, no control characters other than tab, line feed and carriage return")
        k: int = Field(default_k, description=f"number of hits, 1..{max_k}")
        rerank: bool | None = Field(None, description="rerank the top hits (default: when the pipeline has a reranker)")

    app = FastAPI(title="rankline search", version="0.1.0", docs_url=None, redoc_url=None)
    app.add_middleware(Door, count=_count, keys=keys, open_paths=_OPEN_ROUTES, routes=_ROUTES,
                       max_body_bytes=settings.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type")
        if content_type and not _is_json(content_type):
            return JSONResponse({"detail": f"the body must be sent as JSON (content-type: application/json), "
                                           f"not as {printable(content_type, 80)!r}"}, 415)
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {})
            return JSONResponse({"detail": f"malformed JSON body: {ctx.get('error', 'cannot be parsed')}"}, 400)
        if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errors):
            return JSONResponse({"detail": "malformed JSON body: the body is empty; expected a JSON object"}, 400)
        return JSONResponse({"detail": printable("; ".join(_describe(e) for e in errors), 1000)}, 422)

    # I/O only, like Serve's proxy: no CPU reserved; it holds many requests and forwards them in batches
    @serve.deployment(name="SearchAPI", ray_actor_options={"num_cpus": 0},
                      max_ongoing_requests=settings.max_ongoing_requests)
    @serve.ingress(app)
    class SearchAPI:
        def __init__(self, retriever: Any, reranker: Any):
            self.retriever = StageGate("retrieve", retriever, settings.ping_timeout_s, settings.request_timeout_s)
            self.reranker = None
            if reranker is not None:
                self.reranker = StageGate("rerank", reranker, settings.ping_timeout_s, settings.request_timeout_s)
            self.searching = 0  # /search requests in this replica that have not finished retrieving
            self._retrieve.set_max_batch_size(settings.max_batch_size)

        # a batch in flight per retriever replica and one filling: the call's round trip overlaps the next batch
        @serve.batch(max_concurrent_batches=settings.retriever_replicas + 1)
        async def _retrieve(self, queries: list[Query], ks: list[int]) -> list:
            """One call to a retriever replica per batch of concurrent requests, not one per request:
            each request's Candidates, or a StageError for one the retriever failed on alone."""
            return await self.retriever.call("retrieve", queries, ks)

        async def _timed(self, request: Request, stage: str, work: Any) -> tuple[Any, float]:
            start = time.perf_counter()
            result = await work
            _metrics_of(request.app).latency.labels(stage).observe(time.perf_counter() - start)
            return result, (time.perf_counter() - start) * 1000

        @app.post("/search", response_model=SearchResponse, responses=_search_answers(settings.max_body_bytes))
        async def search(self, body: SearchRequest, request: Request) -> SearchResponse:
            try:
                text = clean_query(body.query)
            except ValueError as exc:
                raise HTTPException(422, str(exc)) from None
            if not text.strip():
                raise HTTPException(422, "query must not be empty")
            if len(text) > settings.max_query_chars:
                limit = settings.max_query_chars
                raise HTTPException(422, f"query is {len(text)} characters long; the limit is {limit}")
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
            _metrics_of(request.app).retrieve_waits.labels("none" if alone else "batch").inc()
            self._retrieve.set_batch_wait_timeout_s(0.0 if alone else settings.batch_wait_timeout_s)
            try:
                query = Query("query", text)
                candidates, timings["retrieve"] = await self._timed(request, "retrieve", self._retrieve(query, body.k))
            finally:
                self.searching -= 1
            if isinstance(candidates, StageError):
                raise _answer_for("retrieve", candidates, request)
            first_stage_rank = {h.docid: i for i, h in enumerate(candidates.hits, 1)}
            if rerank and candidates.hits:
                candidates, timings["rerank"] = await self._timed(
                    request, "rerank", self.reranker.call("rerank", candidates))
                if isinstance(candidates, StageError):
                    raise _answer_for("rerank", candidates, request)
            timings["total"] = (time.perf_counter() - start) * 1000
            (hits,) = top([candidates], body.k)
            out = [HitOut(docid=h.docid, score=h.score, title=h.title, text=h.text, rank=rank,
                          first_stage_rank=first_stage_rank[h.docid]) for rank, h in enumerate(hits, 1)]
            return SearchResponse(hits=out, timings_ms=timings)

        @app.get("/health")
        async def health(self) -> dict:
            """Liveness: the ingress answers (see /ready for whether searches can be answered)."""
            return {"status": "ok", "reranker": has_reranker}

        @app.get("/ready", response_model=ReadyOut, responses={
            503: {"model": ReadyOut, "description": "a stage does not answer (starting, restarting or hung)",
                  "headers": _RETRY_AFTER}})
        async def ready(self) -> JSONResponse:
            """Readiness: 200 when every stage answers a ping (within ping_timeout_s), else 503."""
            gates = [g for g in (self.retriever, self.reranker) if g is not None]
            answers = await asyncio.gather(*(g.alive() for g in gates))
            stages = {g.stage: ok for g, ok in zip(gates, answers)}
            if all(answers):
                return JSONResponse({"status": "ready", "stages": stages})
            return JSONResponse({"status": "not ready", "stages": stages}, 503,
                                headers={"Retry-After": str(RETRY_AFTER_S)})

        @app.get("/metrics", response_class=PlainTextResponse)
        async def metrics(self, request: Request) -> PlainTextResponse:
            return PlainTextResponse(_metrics_of(request.app).text(), media_type="text/plain; version=0.0.4")

        @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
        async def docs(self, request: Request) -> HTMLResponse:
            return HTMLResponse(docs_page(request.app.openapi()))

        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def page(self) -> HTMLResponse:
            return HTMLResponse(search_page(max_k=max_k, default_k=default_k,
                                            has_reranker=has_reranker))

    retriever = RetrieverDeployment.options(
        num_replicas=settings.retriever_replicas, ray_actor_options=ray_resources(settings.retriever_resources),
    ).bind(executor.retrieve_stage)
    reranker = None
    if has_reranker:
        # A reranker replica takes every request the ingress may hold at once (and the gate's pings),
        # so calls wait in its batch queue (batches of max_batch_size), never unassigned in Serve's
        # router, where a wait would look like a dead stage.
        reranker = RerankerDeployment.options(
            num_replicas=settings.reranker_replicas, ray_actor_options=ray_resources(settings.reranker_resources),
            max_ongoing_requests=settings.max_ongoing_requests + 2,
        ).bind(executor.rerank_stage, settings.max_batch_size, settings.batch_wait_timeout_s)
    return SearchAPI.bind(retriever, reranker)


@serve.deployment(name="Retriever", health_check_period_s=STAGE_HEALTH_CHECK_PERIOD_S)
class RetrieverDeployment:
    """One retriever replica: the executor's `retrieve`; each call is a whole batch the ingress gathered."""

    def __init__(self, stage: RetrieveStage):
        self.executor = Executor(RetrieveStage(materialize(stage.source), stage.k))

    def retrieve(self, queries: list[Query], ks: list[int]) -> list:
        """Each query's Candidates, or a StageError for a query that fails alone (see each_alone)."""
        def run(part: list) -> list:
            return self.executor.retrieve([q for q, _ in part], [k for _, k in part])

        return each_alone(run, list(zip(queries, ks)))

    async def ping(self) -> int:
        """The replica answers (its stage is built): its process id."""
        return os.getpid()


@serve.deployment(name="Reranker", health_check_period_s=STAGE_HEALTH_CHECK_PERIOD_S)
class RerankerDeployment:
    """One reranker replica: the executor's `rerank`, with concurrent requests batched into one call
    so that they share forward passes."""

    def __init__(self, stage: RerankStage, max_batch_size: int, batch_wait_timeout_s: float):
        self.executor = Executor(None, RerankStage(materialize(stage.source), stage.depth))
        self.rerank.set_max_batch_size(max_batch_size)
        self.rerank.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch
    async def rerank(self, lists: list[Candidates]) -> list:
        """Each list reranked, or a StageError for a list that fails alone (see each_alone)."""
        return await asyncio.to_thread(each_alone, self.executor.rerank, lists)

    async def ping(self) -> int:
        return os.getpid()
