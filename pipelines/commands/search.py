"""`rankline search`: one query against an index folder, printed as a readable list.

    rankline search DIR "query text" [--k 10] [--method dense|bm25|hybrid]
"""
from __future__ import annotations

import argparse
import shutil
import textwrap

from rankline.pipelines.commands.retrieve import add_retriever_arguments, retriever_options

HELP = "search an index folder with one query and print the hits"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_retriever_arguments(parser)
    parser.add_argument("query", help="the query text")
    parser.add_argument("--snippet", type=int, default=240, help="characters of each hit's text to show (default 240)")


def run(args: argparse.Namespace) -> int:
    from rankline.retrieval.retrievers import open_retriever
    from rankline.formats import Query

    if not args.query.strip():
        raise ValueError("the query text is empty")
    retriever = open_retriever(args.index, **retriever_options(args))
    hits = retriever.search(Query("query", args.query), args.k)
    width = min(100, shutil.get_terminal_size((100, 20)).columns)
    for rank, hit in enumerate(hits, 1):
        print(f"{rank:>3}. {hit.docid}  score {hit.score:.4f}  {hit.title}".rstrip())
        snippet = hit.text if len(hit.text) <= args.snippet else hit.text[: args.snippet].rsplit(" ", 1)[0] + " ..."
        print(textwrap.fill(snippet, width=width, initial_indent="     ", subsequent_indent="     "))
    if not hits:
        print("no hits")
    return 0
