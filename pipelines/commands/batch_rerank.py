"""`rankline batch-rerank`: rerank a TREC run (or any candidates file) over a pool of Ray actors.

    rankline batch-rerank --run RUN.trec --topics TOPICS --corpus CORPUS --reranker first
                          --model NAME_OR_PATH --depth 100 --out OUT.trec [--workers N]

Each worker is a Ray actor that loads the model once; queries go to whichever worker is free, and
every finished query is journaled at once beside the output (OUT.trec.partial.jsonl). Rerun the
same command after a crash or Ctrl-C and it resumes after the journaled queries. The output
appears complete, atomically, at the end, and equals `rankline rerank` on the same inputs.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "rerank a TREC run with an LLM reranker over a pool of Ray actors (resumable, atomic output)"

# CLI flag -> reranker keyword (None: the reranker's default)
RERANKER_OPTIONS = ("window", "stride", "depth", "batch_size", "parity", "context_size")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rankline.rerankers.models import DEFAULT_MODEL
    from rankline.rerankers.registry import RERANKERS

    parser.add_argument("--run", "--candidates", dest="run", required=True, type=Path,
                        help="TREC run (with --topics and --corpus), requests jsonl, or rank_llm JSON(.gz)")
    parser.add_argument("--topics", type=Path, help="queries of a TREC run: qid<TAB>text or BEIR queries.jsonl")
    parser.add_argument("--corpus", type=Path, help="passages of a TREC run: BEIR corpus.jsonl, pyserini jsonl(.gz) or TSV")
    parser.add_argument("--reranker", choices=sorted(RERANKERS), default="first", help="default: first")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"HF id or local folder (default: {DEFAULT_MODEL})")
    parser.add_argument("--window", type=int, help="passages per listwise window (default 20)")
    parser.add_argument("--stride", type=int, help="window stride (default 10)")
    parser.add_argument("--depth", type=int, help="rerank the top DEPTH candidates; the rest keep their order (default 100)")
    parser.add_argument("--parity", choices=["rank_llm"], help="FIRST: reproduce rank_llm 0.26.0 exactly")
    parser.add_argument("--batch-size", type=int, help="sequences per forward pass (default: the reranker's)")
    parser.add_argument("--context-size", type=int, help="FIRST: prompt token budget (default 4096)")
    parser.add_argument("--device", help="torch device inside each worker (default: cuda when available)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="model dtype")
    parser.add_argument("--limit", type=int, help="rerank only the first LIMIT queries of the run")
    parser.add_argument("--workers", type=int, default=1, help="reranker actors (each loads the model; default 1)")
    parser.add_argument("--queries-per-task", type=int,
                        help="queries per actor call, reranked together (default: --batch-size, else 8, "
                             "but no more than spreads the queries over every worker)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, help="Ray CPUs per actor (default 1)")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, help="Ray GPUs per actor (default 0)")
    parser.add_argument("--tag", default="rankline", help="run tag (last column)")
    parser.add_argument("--out", required=True, type=Path, help="output TREC run")


def run(args: argparse.Namespace) -> int:
    from rankline.pipelines.batch import BatchSettings, batch_rerank
    from rankline.pipelines.candidates import read_candidates
    from rankline.pipelines.config import llm_reranker
    from rankline.pipelines.pipeline import Factory

    for flag in ("workers", "queries_per_task", "batch_size", "depth", "window", "stride", "limit"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.cpus_per_worker < 0 or args.gpus_per_worker < 0:
        raise ValueError("--cpus-per-worker and --gpus-per-worker must be >= 0")
    options: dict[str, Any] = {k: getattr(args, k) for k in RERANKER_OPTIONS if getattr(args, k) is not None}
    lists = read_candidates(args.run, topics=args.topics, corpus=args.corpus)[: args.limit]
    reranker = Factory(llm_reranker, (args.reranker, args.model), {"device": args.device, "dtype": args.dtype, **options})
    settings = BatchSettings(
        workers=args.workers,
        queries_per_task=args.queries_per_task or max(1, min(args.batch_size or 8, -(-len(lists) // args.workers))),
        resources={"CPU": args.cpus_per_worker, "GPU": args.gpus_per_worker},
    )
    identity = {"reranker": args.reranker, "model": args.model, "dtype": args.dtype, "options": options}
    report = batch_rerank([(c.query, c.hits) for c in lists], reranker, args.out,
                          settings=settings, identity=identity, tag=args.tag)
    print(f"wrote {report.out}: {report.queries} queries ({report.resumed} resumed, {report.reranked} reranked now) "
          f"by {args.reranker} ({args.model}) on {min(args.workers, max(report.reranked, 1))} worker(s)")
    return 0
