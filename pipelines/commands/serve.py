"""`rankline serve`: the search endpoint of a pipeline file on Ray Serve.

    rankline serve PIPELINE.yaml [--host 127.0.0.1] [--port 8000]

POST /search {"query": "...", "k": 10, "rerank": true} -> {"hits": [...], "timings_ms": {...}};
GET /health, GET /metrics (Prometheus text), GET /openapi.json (and /docs). Runs until Ctrl-C,
then shuts the application down (SIGTERM too). Connects to a running Ray instance (RAY_ADDRESS) or starts a
local one on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path

HELP = "serve a pipeline file as an HTTP search endpoint (Ray Serve + FastAPI)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="pipeline file (.yaml/.yml/.toml): retriever, reranker, serve limits")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")


def run(args: argparse.Namespace) -> int:
    from rankline.pipelines.config import load_config

    config = load_config(args.config)  # bad files fail here, before Ray starts
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    from ray import serve

    from rankline.pipelines.actors import ensure_ray
    from rankline.pipelines.serve_app import build_app

    ensure_ray()
    serve.start(http_options={"host": args.host, "port": args.port})
    signal.signal(signal.SIGTERM, _interrupt)  # after Ray's own handler: `kill` stops as cleanly as Ctrl-C
    try:
        serve.run(build_app(config), name="rankline", route_prefix="/")
        print(f"rankline: serving {args.config} on http://{args.host}:{args.port} "
              "(POST /search, GET /health, /metrics, /openapi.json); Ctrl-C stops", flush=True)
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
