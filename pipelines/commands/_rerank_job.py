"""What `rankline rerank` (in-process) and `rankline batch-rerank` (a pool of Ray actors) share: the
flags of a rerank job over a candidates file, and the job itself, `rankline.pipelines.batch.rerank_job`."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from rankline.pipelines.commands._deprecated import add_deprecated_alias


def add_job_arguments(parser: argparse.ArgumentParser, *, old_candidates: tuple[str, ...] = ()) -> None:
    """--candidates (`old_candidates` are its deprecated spellings) with --topics/--corpus, the reranker
    flags, --limit, --queries-per-task, --tag, --out."""
    from rankline.pipelines.commands._reranker_options import add_reranker_arguments

    candidates = parser.add_mutually_exclusive_group(required=True)  # one of the spellings is required
    candidates.add_argument("--candidates", type=Path,
                            help="requests jsonl, rank_llm retrieve-results JSON(.gz), or a TREC run (with --topics, --corpus)")
    if old_candidates:
        add_deprecated_alias(candidates, *old_candidates, new="--candidates")
    parser.add_argument("--topics", type=Path, help="queries of a TREC run: qid<TAB>text or BEIR queries.jsonl")
    parser.add_argument("--corpus", type=Path, help="passages of a TREC run: BEIR corpus.jsonl, pyserini jsonl(.gz) or TSV")
    add_reranker_arguments(parser)
    parser.add_argument("--limit", type=int, help="rerank only the first LIMIT queries of the candidates")
    parser.add_argument("--queries-per-task", type=int,
                        help="queries reranked together in one reranker call (their windows or pairs share forward "
                             "passes); progress is journaled after each task (default 8, fewer when that spreads "
                             "the queries over every worker)")
    add_deprecated_alias(parser, "--query-group", new="--queries-per-task")
    parser.add_argument("--tag", default="rankline", help="run tag (last column)")
    parser.add_argument("--out", required=True, type=Path, help="output TREC run")


def run_job(args: argparse.Namespace, workers: int, place: Callable, where: str) -> int:
    """Rerank the candidates the flags name with the executor `place(executor)` returns (the executor
    itself, or it on `workers` Ray actors) and print one line on what was written."""
    from rankline.formats import check_output, read_candidates
    from rankline.pipelines.batch import rerank_job
    from rankline.pipelines.commands._reranker_options import check_positive, reranker_stage
    from rankline.pipelines.executor import Executor

    # Every flag, the model's whereabouts, the device and the output path are checked, and the whole
    # input is read and checked, before the journal or any model exists: a mistake leaves nothing behind.
    stage = reranker_stage(args)
    check_positive(args, ("limit", "queries_per_task"))
    if not args.tag or any(c.isspace() for c in args.tag):
        raise ValueError(f"--tag must be one non-empty word, got {args.tag!r}")
    check_output(args.out)
    for flag in ("candidates", "topics", "corpus"):
        given = getattr(args, flag)
        if given is not None and args.out.exists() and given.exists() and args.out.samefile(given):
            raise ValueError(f"--out {args.out} is the --{flag} file; the run would replace its own input")
    lists = read_candidates(args.candidates, topics=args.topics, corpus=args.corpus)[: args.limit]
    per_task = args.queries_per_task or max(1, min(8, -(-len(lists) // workers)))
    # what determines the output, for the journal's fingerprint (the device does not)
    identity = {"reranker": args.reranker, "depth": args.depth, **{k: v for k, v in stage.source.kwargs.items() if k != "device"}}
    report = rerank_job(lists, place(Executor(rerank=stage)), args.out, queries_per_task=per_task,
                        identity=identity, tag=args.tag)
    print(f"wrote {report.out}: {report.queries} queries ({report.resumed} resumed, {report.reranked} reranked now) "
          f"by {args.reranker} ({args.model}, depth {args.depth}) {where}")
    return 0
