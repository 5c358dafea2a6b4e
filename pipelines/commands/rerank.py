"""`rankline rerank`: rerank first-stage candidates with an LLM reranker and write a TREC run.

    rankline rerank --candidates FILE [--topics TOPICS --corpus CORPUS] --reranker first|listwise|query-likelihood|blockrank
                    --model NAME_OR_PATH [--window 20 --stride 10 --depth 100] [--parity rank_llm] --out RUN.trec

FILE is a requests jsonl, a rank_llm retrieve-results JSON(.gz), or a TREC run (with --topics and
--corpus). Every finished query is journaled beside the output (RUN.trec.partial.jsonl, as
`batch-rerank` does); an interrupted job rerun with the same arguments resumes after them, and the
output appears, complete, only at the end (rename).
"""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "rerank candidate lists with an LLM reranker (FIRST, listwise generation, query likelihood, BlockRank) into a TREC run"

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rankline.pipelines.commands._reranker_options import add_reranker_arguments

    parser.add_argument("--candidates", required=True, type=Path,
                        help="requests jsonl, rank_llm retrieve-results JSON(.gz), or a TREC run (with --topics, --corpus)")
    add_reranker_arguments(parser)
    parser.add_argument("--query-group", type=int, default=1,
                        help="queries reranked together, their windows sharing forward passes; progress is saved "
                             "after each group (default 1)")


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from rankline.formats import read_candidates
    from rankline.pipelines.commands._reranker_options import check_positive, reranker_options
    from rankline.pipelines.journal import ResumableRun
    from rankline.rerankers.models import load_causal_lm
    from rankline.rerankers.registry import build_reranker

    options = reranker_options(args)
    check_positive(args, ("query_group",))
    lists = read_candidates(args.candidates, topics=args.topics, corpus=args.corpus)
    if args.limit is not None:
        lists = lists[: args.limit]
    identity = {"reranker": args.reranker, "model": args.model, "dtype": args.dtype, "options": options}
    with ResumableRun(args.out, [(c.query, c.hits) for c in lists], identity) as journal:
        todo = [c for c in lists if c.query.qid not in journal.done]
        if todo:
            lm = load_causal_lm(args.model, device=args.device, dtype=args.dtype)
            reranker = build_reranker(args.reranker, lm, **options)
            with tqdm(total=len(lists), initial=journal.resumed, desc=f"rerank {args.reranker}", unit="query") as bar:
                for i in range(0, len(todo), args.query_group):
                    chunk = todo[i : i + args.query_group]
                    results = reranker.rerank_batch([c.query for c in chunk], [c.hits for c in chunk])
                    for cand, hits in zip(chunk, results):
                        journal.add(cand.query.qid, hits)
                    bar.update(len(chunk))
        journal.finish(args.tag)
    print(f"wrote {args.out}: {len(lists)} queries reranked by {args.reranker} ({args.model})")
    return 0
