"""`rankline rerank`: rerank first-stage candidates with an LLM reranker, in this process, into a TREC run.

    rankline rerank --candidates FILE [--topics TOPICS --corpus CORPUS] --reranker first|listwise|query-likelihood|blockrank
                    --model NAME_OR_PATH [--depth 100] [--window 20 --stride 10] [--parity rank_llm] --out RUN.trec

FILE is a requests jsonl, a rank_llm retrieve-results JSON(.gz), or a TREC run (with --topics and
--corpus). The reranker receives the top --depth candidates of each query; the rest keep their order
below them. This is the in-process case of the job `rankline batch-rerank` runs on Ray actors, with
the same output: every finished task of --queries-per-task queries is journaled beside the output
(RUN.trec.partial.jsonl); an interrupted job rerun with the same arguments resumes after them, and
the output appears, complete, only at the end (rename).
"""
from __future__ import annotations

import argparse

HELP = "rerank candidate lists with an LLM reranker (FIRST, listwise generation, query likelihood, BlockRank) into a TREC run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rankline.pipelines.commands._rerank_job import add_job_arguments

    add_job_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from rankline.pipelines.commands._rerank_job import run_job

    return run_job(args, 1, lambda executor: executor, "in this process")
