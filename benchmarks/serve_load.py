"""Load test of `rankline serve` on loopback: SciFact dense (MiniLM) retrieval, with and without
FIRST reranking (SmolLM2, a tiny top-k), against the same pipeline called in-process.

    python benchmarks/serve_load.py --index DIR [--clients 1 4 16] [--duration 30] [--depth 5]

DIR is a dense index of ../shared/data/beir/scifact built by
`rankline index ../shared/data/beir/scifact --out DIR --dense`. In one run it
1. times the retrieval-only pipeline in-process: `search` one query at a time (the peer of one
   HTTP client) and `run` on 16 queries at once (the peer of 16 clients batched by Serve);
2. starts the Serve app on 127.0.0.1 and, for each mode (retrieval only, retrieval + rerank) and
   each client count, runs a closed loop for `--duration` seconds: every client sends SciFact test
   queries back to back; every `--malformed-every`-th request is malformed (broken JSON, missing or
   empty query, k out of range, wrong types, unknown field, too long);
3. prints throughput of valid requests, p50/p95/p99 latency, responses by status, whether every
   malformed request got a 4xx, the HTTP/in-process throughput ratios, and the HTTP floor: the
   round trip of GET /health, which bounds what one client can get however fast the retrieval;
4. fault phase (`--fault-duration` seconds, retrieve + rerank unless --no-rerank, the largest client
   count): every `--poison-every`-th request is poison (text that is not text: lone surrogates,
   control characters; a body above max_body_bytes), a quarter of the way in every retriever
   replica is killed (ray.kill of its actor) and half-way every reranker replica; it prints the
   innocent requests answered 2xx, the documented 503s (with Retry-After) they got meanwhile, the
   poison answered 4xx, every 5xx other than those 503s (goal 0), innocent answers other than 2xx
   per 5 s, and the time from each kill until the first innocent request sent after it is answered
   2xx (the time to recover). Its clients wait as long as a 503's Retry-After says.
Goals: zero 5xx, every malformed request a 4xx, retrieval-only throughput within 2x of in-process;
in the fault phase every poison request a 4xx and no 5xx but 503 with Retry-After.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = Path(os.environ.get("RANKLINE_SHARED", ROOT.parent / "shared")) / "data" / "beir" / "scifact"

MALFORMED: list[tuple[str, bytes]] = [
    ("broken JSON", b'{"query": "cancer", "k": '),
    ("missing query", b'{"k": 5}'),
    ("empty query", b'{"query": "  "}'),
    ("k = 0", b'{"query": "cancer", "k": 0}'),
    ("k too large", b'{"query": "cancer", "k": 100000}'),
    ("k a string", b'{"query": "cancer", "k": "5"}'),
    ("query a number", b'{"query": 42}'),
    ("unknown field", b'{"query": "cancer", "top_k": 5}'),
    ("too long", b'{"query": "' + b"a" * 5000 + b'"}'),
    ("not an object", b'["cancer"]'),
]

POISON: list[tuple[str, bytes]] = [
    ("lone high surrogate", b'{"query": "cancer \\ud800 cells"}'),
    ("lone low surrogate", b'{"query": "\\udfff"}'),
    ("NUL", b'{"query": "cancer\\u0000"}'),
    ("terminal escape", b'{"query": "cancer \\u001b[2J cells"}'),
    ("C1 control", b'{"query": "cancer \\u0085 cells"}'),
    ("body above 1 MB", b'{"query": "' + b"a" * 1_000_001 + b'"}'),
]


@dataclass(frozen=True)
class Answer:
    """One request of the fault phase: when it was sent and answered (perf_counter), and how."""

    sent: float
    done: float
    bad: bool
    status: str
    retry_after: bool


@dataclass
class LoadResult:
    mode: str
    clients: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)  # valid requests answered 200
    statuses: Counter = field(default_factory=Counter)
    malformed_sent: int = 0
    malformed_4xx: int = 0
    failures: Counter = field(default_factory=Counter)  # (status, detail) of each 5xx or transport error
    answers: list[Answer] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(round(q / 100 * (len(data) - 1))))]

    @property
    def qps(self) -> float:
        return len(self.latencies_ms) / self.seconds


async def _client(http, texts: list[str], offset: int, end: float, rerank: bool, k: int,
                  malformed_every: int, result: LoadResult, bad_bodies: list[tuple[str, bytes]]) -> None:
    i = 0
    while time.perf_counter() < end:
        i += 1
        bad = malformed_every > 0 and i % malformed_every == 0
        if bad:
            body = bad_bodies[(offset + i // malformed_every) % len(bad_bodies)][1]
        else:
            text = texts[(offset * 7919 + i) % len(texts)]
            body = json.dumps({"query": text, "k": k, "rerank": rerank}).encode()
        start = time.perf_counter()
        retry_after = False
        try:
            r = await http.post("/search", content=body, headers={"content-type": "application/json"})
            status = str(r.status_code)
            retry_after = "retry-after" in r.headers
        except Exception as exc:  # a transport failure is reported, not hidden
            status = f"error:{type(exc).__name__}"
            result.failures[(status, str(exc)[:200])] += 1
        else:
            if r.status_code >= 500:
                result.failures[(status, r.text[:200])] += 1
        done = time.perf_counter()
        elapsed = (done - start) * 1000
        result.answers.append(Answer(start, done, bad, status, retry_after))
        result.statuses[status] += 1
        if retry_after:  # a well-behaved client waits as told
            await asyncio.sleep(float(r.headers["retry-after"]))
        if bad:
            result.malformed_sent += 1
            result.malformed_4xx += status.startswith("4")
        elif status == "200":
            result.latencies_ms.append(elapsed)


async def run_load(url: str, texts: list[str], clients: int, duration: float, rerank: bool, k: int,
                   malformed_every: int, timeout: float, bad_bodies: list[tuple[str, bytes]] = MALFORMED,
                   faults: tuple[tuple[float, Any], ...] = ()) -> LoadResult:
    """`clients` closed loops for `duration` seconds; each (after_s, fault) of `faults` is called
    that many seconds in (in a thread: it may block)."""
    import httpx

    result = LoadResult("retrieve+rerank" if rerank else "retrieve", clients, duration)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as http:
        start = time.perf_counter()
        end = start + duration

        async def inject(after_s: float, fault: Any) -> None:
            await asyncio.sleep(after_s)
            await asyncio.to_thread(fault)

        await asyncio.gather(*(_client(http, texts, c, end, rerank, k, malformed_every, result, bad_bodies)
                               for c in range(clients)), *(inject(s, f) for s, f in faults))
        result.seconds = time.perf_counter() - start
    return result


@dataclass
class Kill:
    """Every replica of a deployment killed; `at` is when (perf_counter), once done."""

    app: str
    deployment: str
    at: float = float("nan")
    killed: int = 0

    def __call__(self) -> None:
        import ray

        from rankline.pipelines.serve_app import replica_actors

        actors = replica_actors(self.app, self.deployment)
        self.at = time.perf_counter()
        for actor in actors:
            ray.kill(actor, no_restart=True)
        self.killed = len(actors)
        print(f"fault: killed {self.killed} {self.deployment} replica(s)", file=sys.stderr)


def fault_report(result: LoadResult, kills: list[Kill]) -> tuple[list[str], int, bool]:
    """The fault phase's lines, its 5xx other than 503 with Retry-After, and whether every poison
    request got a 4xx."""
    innocent = [a for a in result.answers if not a.bad]
    poison = [a for a in result.answers if a.bad]
    ok = sum(a.status.startswith("2") for a in innocent)
    documented = sum(a.status == "503" and a.retry_after for a in innocent)
    poison_4xx = sum(a.status.startswith("4") for a in poison)
    other = [a for a in result.answers if (a.status.startswith("5") and not (a.status == "503" and a.retry_after))
             or a.status.startswith("error")]
    lines = [f"innocent requests answered 2xx: {ok}/{len(innocent)} "
             f"({documented} answered 503 with Retry-After while a stage was down)",
             f"poison requests answered 4xx: {poison_4xx}/{len(poison)} "
             f"({' '.join(f'{s}:{n}' for s, n in sorted(Counter(a.status for a in poison).items()))})",
             f"5xx other than the documented 503 with Retry-After: {len(other)} (goal 0)"]
    first = min((a.sent for a in result.answers), default=0.0)
    buckets = Counter(int((a.done - first) // 5) for a in innocent if not a.status.startswith("2"))
    last = int((max((a.done for a in result.answers), default=first) - first) // 5)
    lines.append("innocent requests not answered 2xx, per 5 s: " + " ".join(str(buckets[b]) for b in range(last + 1)))
    for kill in kills:
        answered = [a.done for a in innocent if a.sent >= kill.at and a.status.startswith("2")]
        recovery = f"{min(answered) - kill.at:.1f} s" if answered else "not recovered"
        lines.append(f"time to recover after killing {kill.killed} {kill.deployment} replica(s) "
                     f"(until the first innocent request sent after the kill is answered 2xx): {recovery}")
    return lines, len(other), poison_4xx == len(poison)


async def health_round_trip_ms(url: str, n: int = 200) -> float:
    """Median round trip of GET /health, one at a time: HTTP, Serve's proxy and the ingress, no stage."""
    import httpx

    times = []
    async with httpx.AsyncClient(base_url=url) as http:
        for _ in range(n):
            start = time.perf_counter()
            (await http.get("/health")).raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[n // 2]


def in_process(pipe, texts: list[str], k: int, duration: float, batch: int) -> tuple[float, float]:
    """(queries/s calling `search` one query at a time, queries/s calling `run` on `batch` queries)."""
    def one(n: int) -> int:
        pipe.search(texts[n % len(texts)], k)
        return 1

    def many(n: int) -> int:
        pipe.run({str(i): texts[(n + i) % len(texts)] for i in range(batch)})
        return batch

    def throughput(step) -> float:
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < duration:
            n += step(n)
        return n / (time.perf_counter() - start)

    return throughput(one), throughput(many)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True, help="dense SciFact index folder (rankline index --dense)")
    parser.add_argument("--data", type=Path, default=SCIFACT, help="BEIR SciFact folder (queries.jsonl, qrels/test.tsv)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per (mode, clients) level")
    parser.add_argument("--inproc-duration", type=float, default=15.0, help="seconds per in-process measurement")
    parser.add_argument("--k", type=int, default=10, help="hits per request")
    parser.add_argument("--depth", type=int, default=5, help="candidates of a request the reranker receives (tiny top-k)")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="reranker LLM (default: embedded SmolLM2)")
    parser.add_argument("--dtype", default="bfloat16",
                        help="reranker dtype (default bfloat16: half fp32's time on a CPU with AVX-512 BF16 or AMX)")
    parser.add_argument("--malformed-every", type=int, default=10, help="every N-th request is malformed (0: none)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads of each side: the in-process pipeline (torch, FAISS) and each Serve "
                             "stage replica (its Ray CPUs, which Ray turns into OMP_NUM_THREADS); default 1")
    parser.add_argument("--request-timeout", type=float, default=120.0,
                        help="the service's per-stage budget; a request waiting longer is answered 503 (default 120)")
    parser.add_argument("--no-rerank", action="store_true", help="skip the reranking mode")
    parser.add_argument("--batch-wait", type=float,
                        help="seconds a stage waits to fill a batch (default: the serve setting batch_wait_timeout_s's)")
    parser.add_argument("--fault-duration", type=float, default=60.0,
                        help="seconds of the fault phase (poison requests, replicas killed); 0 skips it")
    parser.add_argument("--poison-every", type=int, default=5, help="in the fault phase, every N-th request is poison")
    args = parser.parse_args()

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray import serve

    from rankline.formats import read_qrels, read_topics
    from rankline.pipelines.actors import ensure_ray
    from rankline.pipelines.config import PipelineConfig, ServeSettings
    from rankline.pipelines.executor import Factory
    from rankline.pipelines.pipeline import Pipeline
    from rankline.pipelines.serve_app import build_app
    from rankline.rerankers import build_reranker
    from rankline.retrieval import open_retriever

    topics = read_topics(args.data / "queries.jsonl")
    texts = [topics[qid] for qid in read_qrels(args.data / "qrels" / "test.tsv")]
    retriever = Factory(open_retriever, (str(args.index),), {"method": "dense"})

    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    print(f"in-process retrieval-only pipeline, {len(texts)} SciFact test queries, k={args.k} ...", file=sys.stderr)
    pipe = Pipeline.builder().retrieve(retriever, k=args.k).build()
    pipe.search(texts[0], args.k)  # load the encoder and the index before timing
    batch = max(args.clients)
    single_qps, batched_qps = in_process(pipe, texts, args.k, args.inproc_duration, batch)
    pipe.close()

    reranker = None
    if not args.no_rerank:
        reranker = Factory(build_reranker, ("first",), {"model": args.model, "device": "cpu", "dtype": args.dtype})
    config = PipelineConfig(retriever, args.k, reranker, args.depth,
                            ServeSettings(max_k=100, max_query_chars=2000, max_batch_size=batch,
                                          retriever_resources={"CPU": args.threads},
                                          reranker_resources={"CPU": args.threads},
                                          request_timeout_s=args.request_timeout,
                                          **({} if args.batch_wait is None else {"batch_wait_timeout_s": args.batch_wait})))
    ensure_ray()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    results: list[LoadResult] = []
    fault: tuple[LoadResult, tuple[tuple[float, Kill], ...]] | None = None
    try:
        print(f"starting the Serve app on {url} ...", file=sys.stderr)
        serve.run(build_app(config), name="rankline-bench", route_prefix="/")
        floor_ms = asyncio.run(health_round_trip_ms(url))
        for rerank in ([False] if args.no_rerank else [False, True]):
            # the client waits out both stages' budgets, so a slow answer is the server's 503, not a client timeout
            timeout = 2 * args.request_timeout + 30
            asyncio.run(run_load(url, texts, 1, 3.0, rerank, args.k, 0, timeout))  # warm-up, not reported
            for clients in args.clients:
                print(f"load: rerank={rerank} clients={clients} for {args.duration:.0f}s ...", file=sys.stderr)
                results.append(asyncio.run(run_load(url, texts, clients, args.duration, rerank, args.k,
                                                    args.malformed_every, timeout)))
        if args.fault_duration > 0:
            kills = [Kill("rankline-bench", "Retriever")] + ([] if args.no_rerank else [Kill("rankline-bench", "Reranker")])
            print(f"fault phase: {batch} clients for {args.fault_duration:.0f}s ...", file=sys.stderr)
            faults = tuple((args.fault_duration * (i + 1) / 4, kill) for i, kill in enumerate(kills))
            fault = asyncio.run(run_load(url, texts, batch, args.fault_duration, not args.no_rerank, args.k,
                                         args.poison_every, timeout, POISON, faults)), faults
    finally:
        serve.shutdown()

    print(f"\nrankline serve on 127.0.0.1, SciFact dense MiniLM (k={args.k})"
          + ("" if args.no_rerank else f", FIRST {args.model} ({args.dtype}) on the top {args.depth}")
          + f"; {args.duration:.0f} s per level, every {args.malformed_every}th request malformed; "
          + f"{args.threads} thread(s) per stage on each side\n")
    header = f"{'mode':<16}{'clients':>8}{'ok/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}  {'malformed 4xx':>14}  statuses"
    print(header)
    print("-" * len(header))
    for r in results:
        statuses = " ".join(f"{s}:{n}" for s, n in sorted(r.statuses.items()))
        print(f"{r.mode:<16}{r.clients:>8}{r.qps:>9.2f}{r.percentile(50):>9.1f}{r.percentile(95):>9.1f}"
              f"{r.percentile(99):>9.1f}  {f'{r.malformed_4xx}/{r.malformed_sent}':>14}  {statuses}")
    print(f"\nin-process retrieval: search() one at a time {single_qps:.2f} q/s; run() on {batch} at once {batched_qps:.2f} q/s")
    retrieval = {r.clients: r for r in results if r.mode == "retrieve"}
    ratios = []
    if 1 in retrieval:
        ratios.append(("1 client vs in-process search()", single_qps / retrieval[1].qps))
    if batch in retrieval:
        ratios.append((f"{batch} clients vs in-process run() on {batch}", batched_qps / retrieval[batch].qps))
    for name, ratio in ratios:
        print(f"in-process / HTTP retrieval throughput, {name}: {ratio:.2f}x (goal <= 2x)")
    if retrieval:
        peak = max(retrieval.values(), key=lambda r: r.qps)
        print(f"in-process run() / HTTP retrieval at its peak ({peak.clients} clients, {peak.qps:.2f} ok/s): "
              f"{batched_qps / peak.qps:.2f}x")
    single_ms = 1000 / single_qps
    print(f"HTTP floor: GET /health one at a time {floor_ms:.1f} ms p50 (no stage called); one client can reach at "
          f"most 1000 / ({floor_ms:.1f} + {single_ms:.1f}) = {1000 / (floor_ms + single_ms):.1f} q/s, "
          f"{(floor_ms + single_ms) / single_ms:.2f}x below in-process search()")
    for r in results:
        for (status, detail), n in r.failures.items():
            print(f"  {r.mode} x{r.clients}: {n} x {status} {detail}")
    five_xx = sum(n for r in results for s, n in r.statuses.items() if s.startswith("5") or s.startswith("error"))
    malformed_ok = all(r.malformed_4xx == r.malformed_sent for r in results)
    print(f"5xx or transport errors: {five_xx} (goal 0); every malformed request answered 4xx: {malformed_ok}")
    fault_ok = True
    if fault is not None:
        result, faults = fault
        kills = [kill for _, kill in faults]
        print(f"\nfault phase: {result.clients} clients for {result.seconds:.0f} s, "
              f"{result.mode}, every {args.poison_every}th request poison; "
              + ", ".join(f"every {k.deployment} replica killed {after:.0f} s in" for after, k in faults))
        lines, other_5xx, poison_ok = fault_report(result, kills)
        print("\n".join(lines))
        for (status, detail), n in result.failures.items():
            print(f"  fault phase: {n} x {status} {detail}")
        fault_ok = other_5xx == 0 and poison_ok
    return 0 if five_xx == 0 and malformed_ok and fault_ok else 1


if __name__ == "__main__":
    sys.exit(main())
