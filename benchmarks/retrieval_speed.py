"""Dense retrieval speed: rankline against pyserini's own encoder and FaissSearcher, in one run.

    python benchmarks/retrieval_speed.py [--corpus ../shared/data/beir/scifact] [--index out/demo/scifact-index]
                                         [--docs 1000] [--threads 2] [--batch-size 64]

Encoding: the first --docs documents of the corpus (title + " " + text), all-MiniLM-L6-v2, batches of
--batch-size, max length 256, mean pooling, L2 norm, under torch.inference_mode for both. rankline
sorts documents by length before batching and runs the transformer in ONNX Runtime (its default on
the CPU; the PyTorch backend is timed too); pyserini's AutoDocumentEncoder (what `python -m
pyserini.encode` runs) batches in corpus order in PyTorch. Search: the BEIR test queries of --corpus against the
same FAISS index (the --index folder's, built with `rankline index` when missing), top 100, through
rankline's DenseRetriever.search_batch and pyserini's FaissSearcher.batch_search with the same query
encoder weights. Both run with --threads torch and FAISS threads; each side is timed --rounds times,
rotating which goes first, and its fastest round counts. The table also checks that the two
paths agree (max embedding difference, top-10 overlap).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np

from rankline.retrieval import BuildOptions, build_index, open_index, open_retriever
from rankline.retrieval.corpus import doc_contents, iter_docs, load_queries
from rankline.retrieval.docstore import DocStore
from rankline.retrieval.encoder import DEFAULT_ENCODER, load_encoder, resolve_encoder
from rankline.retrieval.lucene_env import pyserini_faiss


def best_of(rounds: int, *sides) -> list[tuple]:
    """[(result, best seconds)] per side: each round times every side, rotating which goes first, so
    load from other processes on a shared machine hits all alike; the fastest round of each counts."""
    times: list[list[float]] = [[] for _ in sides]
    results: list[object] = [None] * len(sides)
    for r in range(rounds):
        for i in [(r + j) % len(sides) for j in range(len(sides))]:
            start = time.perf_counter()
            results[i] = sides[i]()
            times[i].append(time.perf_counter() - start)
    return [(result, min(t)) for result, t in zip(results, times)]


def pyserini_encode(encoder, docs, batch_size: int) -> np.ndarray:
    out = []
    for lo in range(0, len(docs), batch_size):
        batch = docs[lo : lo + batch_size]
        out.append(encoder.encode([d.text for d in batch], titles=[d.title for d in batch], max_length=256))
    return np.concatenate(out)


def pyserini_index_dir(index_dir: Path, tmp: Path) -> Path:
    """The rankline index's FAISS file and doc ids laid out as FaissSearcher expects (index, docid)."""
    manifest = open_index(index_dir)
    shutil.copyfile(index_dir / manifest.dense["file"], tmp / "index")
    with DocStore(index_dir / manifest.docstore) as store:
        (tmp / "docid").write_text("\n".join(d.docid for d in store.iter_range(0, manifest.count)) + "\n")
    return tmp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="../shared/data/beir/scifact", help="BEIR folder")
    parser.add_argument("--index", default="out/demo/scifact-index", help="rankline index folder of --corpus")
    parser.add_argument("--docs", type=int, default=1000, help="documents to encode")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per side; the fastest counts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args()

    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    docs = list(islice(iter_docs(args.corpus), args.docs))
    queries = load_queries(args.corpus, "test")
    index_dir = Path(args.index)
    if not (index_dir / "manifest.json").exists():
        build_index([args.corpus], index_dir, BuildOptions(dense=True, bm25=False))

    ours = load_encoder(DEFAULT_ENCODER, device="cpu")  # ONNX Runtime when installed (the default)
    ours_torch = load_encoder(DEFAULT_ENCODER, device="cpu", backend="torch")
    for encoder in (ours, ours_torch):
        encoder.model.max_seq_length = 256
    ps = pyserini_faiss()
    theirs = ps.AutoDocumentEncoder(resolve_encoder(DEFAULT_ENCODER), device="cpu", pooling="mean", l2_norm=True)
    texts = [doc_contents(d) for d in docs]
    with torch.inference_mode():
        ours.encode_documents(texts[:8], batch_size=8)  # warm-up
        ours_torch.encode_documents(texts[:8], batch_size=8)
        pyserini_encode(theirs, docs[:8], 8)
        (emb_ours, t_ours), (emb_torch, t_torch), (emb_theirs, t_theirs) = best_of(
            args.rounds, lambda: ours.encode_documents(texts, batch_size=args.batch_size),
            lambda: ours_torch.encode_documents(texts, batch_size=args.batch_size),
            lambda: pyserini_encode(theirs, docs, args.batch_size))
    diff = float(max(np.abs(emb_ours - emb_theirs).max(), np.abs(emb_torch - emb_theirs).max()))

    retriever = open_retriever(index_dir, "dense", with_text=False)
    with tempfile.TemporaryDirectory() as tmp:
        query_encoder = ps.AutoQueryEncoder(resolve_encoder(DEFAULT_ENCODER), device="cpu", pooling="mean", l2_norm=True)
        searcher = ps.FaissSearcher(str(pyserini_index_dir(index_dir, Path(tmp))), query_encoder)
        with torch.inference_mode():
            retriever.search_batch(queries[:4], args.k)
            searcher.batch_search([q.text for q in queries[:4]], [q.qid for q in queries[:4]], args.k, args.threads)
            (hits_ours, s_ours), (hits_theirs, s_theirs) = best_of(
                args.rounds, lambda: retriever.search_batch(queries, args.k),
                lambda: searcher.batch_search([q.text for q in queries], [q.qid for q in queries], args.k, args.threads))
    overlap = np.mean([len({h.docid for h in mine[:10]} & {h.docid for h in hits_theirs[q.qid][:10]}) / 10
                       for q, mine in zip(queries, hits_ours)])

    rows = [
        (f"encode (docs/s, {ours.backend})", len(docs) / t_ours, len(docs) / t_theirs),
        ("encode (docs/s, torch)", len(docs) / t_torch, len(docs) / t_theirs),
        ("search (queries/s)", len(queries) / s_ours, len(queries) / s_theirs),
    ]
    print(f"{len(docs)} documents, {len(queries)} queries, {args.threads} threads, batch {args.batch_size}, top {args.k}, "
          f"best of {args.rounds} rotating rounds")
    print(f"{'':26} {'rankline':>10} {'pyserini':>10} {'ratio':>7}")
    for name, a, b in rows:
        print(f"{name:26} {a:10.1f} {b:10.1f} {a / b:6.2f}x")
    print(f"max |embedding difference| {diff:.2e}; mean top-10 overlap {overlap:.3f}")


if __name__ == "__main__":
    main()
