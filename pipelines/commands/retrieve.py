"""`rankline retrieve`: run a query set against an index folder and write a TREC run.

    rankline retrieve DIR --topics FILE|BEIR_DIR [--split test] --method dense|bm25|hybrid --k 1000 --out RUN.trec
    rankline retrieve --pipeline PIPELINE.yaml --topics FILE|BEIR_DIR --k 1000 --out RUN.trec

Topics are ``qid<TAB>text`` TSV, BEIR queries.jsonl, or a BEIR folder (its queries judged in
qrels/<split>.tsv). --remove-query drops a hit whose doc id equals the query id, as pyserini's BEIR
runs (--remove-query) and BEIR's evaluation (ignore_identical_ids) do for corpora such as Quora.
With --pipeline, the retriever is the pipeline file's (a sharded index on Ray actors included:
retriever.shards); rerank the run with `rankline batch-rerank`.
"""
from __future__ import annotations

import argparse
from typing import Any

from rankline.pipelines.commands._deprecated import add_deprecated_alias

HELP = "retrieve the top-k documents of every query of a topics file into a TREC run"


def add_retriever_arguments(parser: argparse.ArgumentParser, *, index_required: bool = True) -> None:
    """Options shared by `retrieve` and `search` (where DIR may give way to a pipeline file)."""
    parser.add_argument("index", metavar="DIR", nargs=None if index_required else "?",
                        help="index folder built by `rankline index`")
    parser.add_argument("--method", default="dense", help="dense (default), bm25 or hybrid")
    parser.add_argument("--k", type=int, default=10, help="hits per query")
    parser.add_argument("--encoder", help="query encoder (must have the index's weights; default: the index's)")
    parser.add_argument("--device", help="torch device for the query encoder (in `search`, also the reranker's model)")
    parser.add_argument("--k1", type=float, default=0.9, help="BM25 k1 (default 0.9, pyserini BEIR flat)")
    parser.add_argument("--b", type=float, default=0.4, help="BM25 b (default 0.4, pyserini BEIR flat)")
    parser.add_argument("--fusion", default="rrf", help="hybrid fusion: rrf (default) or interpolate")
    parser.add_argument("--rrf-k", type=int, default=60, help="RRF constant (default 60)")
    parser.add_argument("--alpha", type=float, default=0.5, help="interpolation weight of BM25; dense gets 1 - alpha (default 0.5)")
    parser.add_argument("--fusion-depth", type=int, default=1000,
                        help="hybrid: hits taken from each part before fusion (default 1000)")
    parser.add_argument("--nprobe", type=int, default=32, help="IVF lists probed (ivfpq indexes)")
    parser.add_argument("--ef-search", type=int, default=128, help="HNSW search breadth (hnsw indexes)")
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="skip the checksum check of the index files")


def retriever_options(args: argparse.Namespace) -> dict[str, Any]:
    """open_retriever's keyword options for args.method, after checking --k and --device."""
    if args.k <= 0:
        raise ValueError(f"--k must be a positive integer, got {args.k}")
    if args.device is not None:
        from rankline.rerankers.models import check_device

        check_device(args.device)  # an unknown or unavailable device: one line, before the index opens
    dense = {"encoder": args.encoder, "device": args.device, "nprobe": args.nprobe, "ef_search": args.ef_search}
    bm25 = {"k1": args.k1, "b": args.b}
    hybrid = {"fusion": args.fusion, "rrf_k": args.rrf_k, "alpha": args.alpha, "fusion_depth": args.fusion_depth}
    chosen = {"dense": dense, "bm25": bm25, "hybrid": {**dense, **bm25, **hybrid}}.get(args.method, {})
    return {"method": args.method, "verify": args.verify, **chosen}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_retriever_arguments(parser, index_required=False)  # none with --pipeline
    parser.add_argument("--pipeline", help="pipeline file (.yaml/.yml/.toml) whose retriever to run instead of DIR's "
                        "(not its reranker: rerank the run with batch-rerank)")
    add_deprecated_alias(parser, "--depth", new="--fusion-depth")
    parser.set_defaults(k=1000)
    parser.add_argument("--topics", required=True, help="topics TSV, BEIR queries.jsonl, or a BEIR folder")
    parser.add_argument("--split", help="with a BEIR folder: the qrels split whose queries to run (default test)")
    parser.add_argument("--out", required=True, metavar="RUN", help="TREC run file to write (.gz is fine)")
    parser.add_argument("--tag", default=None, help="run tag (default rankline-METHOD)")
    parser.add_argument("--remove-query", action="store_true", help="drop hits whose doc id equals the query id")
    parser.add_argument("--batch-size", type=int, default=256, help="queries per search batch (default 256)")
    parser.add_argument("--threads", type=int, default=1, help="BM25 search threads (default 1)")


def run(args: argparse.Namespace) -> int:
    from rankline.formats import check_output, write_run
    from rankline.retrieval.corpus import load_queries
    from rankline.retrieval.retrievers import open_retriever

    # every flag and the output path are checked before the index opens or any query runs
    options = retriever_options(args)
    if (args.index is None) == (args.pipeline is None):
        raise ValueError("give an index folder DIR or --pipeline FILE (the pipeline file names the index)")
    tag = args.tag or ("rankline-pipeline" if args.pipeline else f"rankline-{args.method}")
    if any(c.isspace() for c in tag):
        raise ValueError(f"--tag must be one non-empty word, got {tag!r}")
    for flag in ("batch_size", "threads"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    check_output(args.out)
    if args.pipeline is not None:
        from rankline.pipelines.config import load_config

        config = load_config(args.pipeline)  # a bad file fails before any query runs
    if args.method in ("bm25", "hybrid"):
        options["threads"] = args.threads
    queries = load_queries(args.topics, args.split)
    if args.pipeline is not None:
        retriever = config.retriever.build()
    else:
        retriever = open_retriever(args.index, with_text=False, **options)
    try:
        run_ = _retrieve(args, retriever, queries)
    finally:
        getattr(retriever, "close", lambda: None)()  # a sharded retriever's actors
    write_run(args.out, run_, tag=tag)
    print(f"{args.out}: {len(run_)} queries, top {args.k} by {'the retriever of ' + args.pipeline if args.pipeline else args.method}")
    return 0


def _retrieve(args: argparse.Namespace, retriever, queries) -> dict[str, dict[str, float]]:
    from tqdm.auto import tqdm

    wanted = args.k + 1 if args.remove_query else args.k
    run_: dict[str, dict[str, float]] = {}
    with tqdm(total=len(queries), desc=f"retrieve {args.method}", unit="query") as bar:
        for lo in range(0, len(queries), args.batch_size):
            batch = queries[lo : lo + args.batch_size]
            for query, hits in zip(batch, retriever.search_batch(batch, wanted)):
                kept = [h for h in hits if not (args.remove_query and h.docid == query.qid)][: args.k]
                run_[query.qid] = {h.docid: h.score for h in kept}
            bar.update(len(batch))
    return run_
