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

HELP = "rerank a TREC run with an LLM reranker over a pool of Ray actors (resumable, atomic output)"

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rankline.pipelines.commands._reranker_options import add_reranker_arguments

    parser.add_argument("--run", "--candidates", dest="run", required=True, type=Path,
                        help="TREC run (with --topics and --corpus), requests jsonl, or rank_llm JSON(.gz)")
    add_reranker_arguments(parser)
    parser.add_argument("--workers", type=int, default=1, help="reranker actors (each loads the model; default 1)")
    parser.add_argument("--queries-per-task", type=int,
                        help="queries per actor call, reranked together (default: --batch-size, else 8, "
                             "but no more than spreads the queries over every worker)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, help="Ray CPUs per actor (default 1)")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, help="Ray GPUs per actor (default 0)")


def run(args: argparse.Namespace) -> int:
    from rankline.pipelines.batch import BatchSettings, batch_rerank
    from rankline.formats import read_candidates
    from rankline.pipelines.commands._reranker_options import check_positive, reranker_options
    from rankline.pipelines.config import llm_reranker
    from rankline.pipelines.pipeline import Factory

    options = reranker_options(args)
    check_positive(args, ("workers", "queries_per_task"))
    if args.cpus_per_worker < 0 or args.gpus_per_worker < 0:
        raise ValueError("--cpus-per-worker and --gpus-per-worker must be >= 0")
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
