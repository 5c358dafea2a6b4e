"""`rankline serve`: the search endpoint of a pipeline file on Ray Serve.

    rankline serve PIPELINE.yaml [--host 127.0.0.1] [--port 8000]

POST /search {"query": "...", "k": 10, "rerank": true} -> {"hits": [...], "timings_ms": {...}};
GET /health (liveness), /ready (readiness), /metrics (Prometheus text), /openapi.json and /docs.
A sharded retriever (retriever.shards in the file) serves each shard from its own Ray actor; while
a shard that died is restarted by Ray, the searches that need it get 503 with Retry-After, never
partial hits.
Runs until Ctrl-C or SIGTERM, at any point, starting included. Connects to a running Ray instance
(RAY_ADDRESS; on stopping it deletes its application there) or starts a local one with every
socket on 127.0.0.1 (on stopping it shuts that instance down, Serve with it).
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from rankline.pipelines.commands._signals import interrupt

HELP = "serve a pipeline file as an HTTP search endpoint (Ray Serve + FastAPI)"
APP_NAME = "rankline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="pipeline file (.yaml/.yml/.toml): retriever, reranker, serve limits")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")


def run(args: argparse.Namespace) -> int:
    # SIGTERM stops this command as Ctrl-C does, from here on: before Ray is imported (the default
    # action would kill the process without a word) and, re-installed after ray.init (which puts in
    # its own), while Serve starts the replicas, which can take minutes with a large model.
    signal.signal(signal.SIGTERM, interrupt)
    from rankline.pipelines.actors import set_local_ray_env
    from rankline.pipelines.config import load_config

    set_local_ray_env()  # before ray is imported
    config = load_config(args.config)  # bad files fail here, before Ray starts
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    from ray import serve

    from rankline.pipelines.actors import check_fits, ensure_ray
    from rankline.pipelines.serve_app import build_app

    app = build_app(config)  # reads the API keys file: a bad one fails here too
    ray_started: bool | None = None  # None: not connected yet
    try:
        ray_started = ensure_ray()
        signal.signal(signal.SIGTERM, interrupt)
        # replicas and shard actors the cluster cannot hold fail here, naming what is short, instead of
        # Serve waiting on them (a shard actor that cannot start fails its retriever replica, again and again)
        check_fits(config.actor_demands())
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(app, name=APP_NAME, route_prefix="/")
        print(f"rankline: serving {args.config} on http://{args.host}:{args.port} "
              "(POST /search, GET /health, /ready, /metrics, /openapi.json, /docs); Ctrl-C stops", flush=True)
        while True:
            time.sleep(3600)
    finally:
        _stop(ray_started)


def _stop(ray_started: bool | None) -> None:
    """Take the application down promptly: a Ray instance this command started goes with everything
    in it (no graceful wait for replicas that may still be loading a model); on a cluster it joined,
    only its application is deleted, without waiting for the replicas to drain."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import ray

    try:
        if not ray.is_initialized():
            return
        if ray_started is False:  # a cluster we joined: only our application goes
            from ray import serve

            try:
                serve.delete(APP_NAME, _blocking=False)
            finally:
                ray.shutdown()  # disconnects this driver
        else:  # ours, or ray.init interrupted half-way
            ray.shutdown()
    except Exception as exc:  # noqa: BLE001 - stopping must not hide why we stop
        print(f"rankline serve: while stopping: {type(exc).__name__}: {exc}", file=sys.stderr)
