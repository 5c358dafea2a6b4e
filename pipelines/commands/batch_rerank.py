"""`rankline batch-rerank`: rerank a TREC run (or any candidates file) over a pool of Ray actors.

    rankline batch-rerank --candidates RUN.trec --topics TOPICS --corpus CORPUS --reranker first
                          --model NAME_OR_PATH --depth 100 --out OUT.trec [--workers N]

The job of `rankline rerank`, placed on Ray: each worker is an actor that loads the model once;
tasks of --queries-per-task queries go to whichever worker is free, and every finished query is
journaled at once beside the output (OUT.trec.partial.jsonl). Rerun the same command after a crash
or Ctrl-C and it resumes after the journaled queries. The output appears complete, atomically, at
the end, and equals `rankline rerank` on the same inputs. (`--run` is the old spelling of --candidates.)
"""
from __future__ import annotations

import argparse

HELP = "rerank a TREC run with an LLM reranker over a pool of Ray actors (resumable, atomic output)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rankline.pipelines.commands._rerank_job import add_job_arguments

    add_job_arguments(parser, old_candidates=("--run",))
    parser.add_argument("--workers", type=int, default=1, help="reranker actors (each loads the model; default 1)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, help="Ray CPUs per actor (default 1)")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, help="Ray GPUs per actor (default 0)")


def run(args: argparse.Namespace) -> int:
    from rankline.pipelines.actors import RayExecutor, RayOptions
    from rankline.pipelines.commands._rerank_job import run_job
    from rankline.pipelines.commands._reranker_options import check_positive

    check_positive(args, ("workers",))
    if args.cpus_per_worker < 0 or args.gpus_per_worker < 0:
        raise ValueError("--cpus-per-worker and --gpus-per-worker must be >= 0")
    opts = RayOptions(num_replicas=args.workers, resources={"CPU": args.cpus_per_worker, "GPU": args.gpus_per_worker})
    return run_job(args, args.workers, lambda executor: RayExecutor(executor, opts), f"on up to {args.workers} Ray worker(s)")
