"""`rankline search`: one query, retrieved and optionally reranked, printed as a readable list.

    rankline search DIR "query text" [--k 10] [--method dense|bm25|hybrid] [--reranker first --depth 20 ...]
    rankline search --pipeline PIPELINE.yaml "query text" [--k 10]

With --reranker (and the reranker flags of `rankline rerank`), the query runs as a pipeline does: the
top max(k, DEPTH) candidates are retrieved, the reranker receives the top --depth of them, and the top
--k are printed. --device places both the query encoder and the reranker's model. (Hybrid fusion's
depth is --fusion-depth.) With --pipeline, the pipeline file names the retriever and the reranker.
"""
from __future__ import annotations

import argparse
import shutil
import textwrap
from pathlib import Path

from rankline.pipelines.commands._reranker_options import add_reranker_arguments
from rankline.pipelines.commands.retrieve import add_retriever_arguments, retriever_options

HELP = "search an index folder or a pipeline file with one query and print the hits"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_retriever_arguments(parser, index_required=False)  # none with --pipeline
    parser.add_argument("query", help="the query text")
    parser.add_argument("--pipeline", type=Path, help="pipeline file (.yaml/.yml/.toml) to search instead of DIR")
    parser.add_argument("--snippet", type=int, default=240, help="characters of each hit's text to show (default 240)")
    reranking = parser.add_argument_group("reranking (with DIR)")
    add_reranker_arguments(reranking, default=None, device=False)


def run(args: argparse.Namespace) -> int:
    if not args.query.strip():
        raise ValueError("the query text is empty")
    hits = _pipeline(args).search(args.query, args.k)
    width = min(100, shutil.get_terminal_size((100, 20)).columns)
    for rank, hit in enumerate(hits, 1):
        print(f"{rank:>3}. {hit.docid}  score {hit.score:.4f}  {hit.title}".rstrip())
        snippet = hit.text if len(hit.text) <= args.snippet else hit.text[: args.snippet].rsplit(" ", 1)[0] + " ..."
        print(textwrap.fill(snippet, width=width, initial_indent="     ", subsequent_indent="     "))
    if not hits:
        print("no hits")
    return 0


def _pipeline(args: argparse.Namespace):
    from rankline.pipelines.config import load_pipeline
    from rankline.pipelines.pipeline import Pipeline
    from rankline.retrieval.retrievers import open_retriever

    options = retriever_options(args)  # checks --k
    if args.pipeline is not None:
        if args.index is not None or args.reranker is not None:
            raise ValueError("--pipeline names the retriever and the reranker: give neither DIR nor --reranker with it")
        return load_pipeline(args.pipeline)
    if args.index is None:
        raise ValueError("give an index folder DIR or --pipeline FILE")
    if args.reranker is None:
        return Pipeline.builder().retrieve(open_retriever(args.index, **options), k=args.k)
    from rankline.pipelines.commands._reranker_options import reranker_stage

    stage = reranker_stage(args)  # bad reranker flags fail before the index opens
    return Pipeline.builder().retrieve(open_retriever(args.index, **options), k=stage.depth).rerank(stage.source, stage.depth)
