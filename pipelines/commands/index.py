"""`rankline index`: build an index folder (dense FAISS and/or BM25) from a corpus, add to it, resume it,
repair it.

    rankline index CORPUS [CORPUS ...] --out DIR [--dense] [--bm25] [--encoder NAME]
                   [--index-type flat|hnsw|ivfpq|FACTORY] [--add | --repair] [--workers N [--gpus-per-worker G]]

CORPUS is a BEIR folder (corpus.jsonl), a pyserini {"id","contents"} jsonl(.gz) or a TSV file. Both
kinds are built unless --dense or --bm25 picks one. Run the same command again after an interruption
to resume; on an index that is already up to date it does nothing. Every run first checks the
index's files against the checksums in its manifest: a damaged index is refused (one line naming
the file, exit 2) and --repair rebuilds only its damaged files, from the corpora it was built from.

--workers N encodes the dense shards (--shard-size documents each, the unit of work) over N Ray actors
on the running Ray (RAY_ADDRESS) or on a local one it starts; --gpus-per-worker G gives each its GPUs
and runs its encoder on cuda. The index folder is the same as one process builds; a worker that dies
costs only the shard it held.
"""
from __future__ import annotations

import argparse

HELP = "build, extend or resume an index folder (FAISS dense and/or Lucene BM25) from a corpus"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpora", nargs="+", metavar="CORPUS", help="BEIR folder, BEIR/pyserini jsonl(.gz) or TSV corpus")
    parser.add_argument("--out", required=True, metavar="DIR", help="index folder to create or update")
    parser.add_argument("--dense", action="store_true", help="build the dense index (default: both kinds)")
    parser.add_argument("--bm25", action="store_true", help="build the BM25 index (default: both kinds)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--add", action="store_true", help="add these corpora's documents to the existing index in --out")
    mode.add_argument("--repair", action="store_true",
                      help="rebuild only the files of the index in --out that fail their checksums (the document store, "
                           "damaged dense shards, the FAISS index, the BM25 index), from the corpora it was built from")
    parser.add_argument("--encoder", help="sentence-transformers model name or folder (default: all-MiniLM-L6-v2, or the index's)")
    parser.add_argument("--index-type", help="flat (exact, default), hnsw, ivfpq, or any FAISS factory string")
    parser.add_argument("--no-normalize", dest="normalize", action="store_false",
                        help="keep raw embeddings (inner product) instead of unit vectors (cosine)")
    parser.add_argument("--batch-size", type=int, default=64, help="documents per encoder batch (default 64)")
    parser.add_argument("--shard-size", type=int, default=8192, help="documents per resumable dense shard (default 8192)")
    parser.add_argument("--device", help="torch device for the encoder (default: sentence-transformers' choice)")
    parser.add_argument("--threads", type=int, default=1, help="Lucene indexing threads (default 1)")
    parser.add_argument("--workers", type=int, default=1,
                        help="Ray actors that encode dense shards, one --shard-size shard at a time, 1 CPU each "
                             "(default 1: in this process)")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0,
                        help="GPUs per encoding actor, whose encoder then runs on cuda (default 0: CPU)")


def run(args: argparse.Namespace) -> int:
    from rankline.retrieval.build import BuildOptions, build_index, check_options, on_ray

    both = not args.dense and not args.bm25
    options = BuildOptions(dense=args.dense or both, bm25=args.bm25 or both, encoder=args.encoder, index_type=args.index_type,
                           normalize=args.normalize, batch_size=args.batch_size, shard_size=args.shard_size,
                           device=args.device, threads=args.threads, workers=args.workers,
                           gpus_per_worker=args.gpus_per_worker)
    check_options(options)
    started_ray = on_ray(options) and _join_ray(options)
    try:
        report = build_index(args.corpora, args.out, options, add=args.add, repair=args.repair)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    if args.repair:
        if not report.repaired:
            print(f"{report.folder}: every file verifies; nothing to repair ({report.count} documents)")
        else:
            print(f"{report.folder}: repaired {len(report.repaired)} damaged file(s) ({', '.join(report.repaired)}): "
                  f"rebuilt {', '.join(report.built)}; every file verifies")
    elif not report.built:
        print(f"{report.folder}: up to date ({report.count} documents)")
    else:
        resumed = " (resumed)" if report.resumed else ""
        print(f"{report.folder}: {report.count} documents, {report.added} added; built {' and '.join(report.built)}{resumed}")
    return 0


def _join_ray(options) -> bool:
    """Connect to the running Ray or start a local one (True when started), and check that it can place
    the encoding actors, before anything is written."""
    import ray

    from rankline.pipelines.actors import check_fits, ensure_ray

    started = ensure_ray()
    try:
        check_fits([{"CPU": 1, "GPU": options.gpus_per_worker}] * options.workers)
    except ValueError as exc:
        if started:
            ray.shutdown()
        raise ValueError(f"--workers {options.workers} --gpus-per-worker {options.gpus_per_worker:g}: {exc}") from None
    return started
