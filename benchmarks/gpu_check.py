"""The GPU path end to end (issue 17): encode, index, search and rerank on the GPU, against the CPU path.

    python benchmarks/gpu_check.py [--corpus ../shared/data/beir/scifact] [--docs 2000] [--queries 50]
                                   [--rerank 5] [--depth 20] [--device cuda]

Where torch or FAISS sees a GPU, for each of the GPU path (--device) and the default CPU path:
- encode: the first --docs SciFact documents (title + text) and the first --queries test queries with
  all-MiniLM-L6-v2 (on cuda: PyTorch; on the CPU: rankline's default, ONNX Runtime), seconds and docs/s;
- index: a flat FAISS index over them, moved to the GPU (`faiss_index.place`), seconds;
- search: the top 10 of every query, seconds;
- rerank: the dense top --depth of the first --rerank queries with the default FIRST reranker
  (SmolLM2-135M-Instruct), seconds per query.
Then how far the paths agree: the largest difference between the two paths' embeddings, the mean
top-10 overlap and the largest score difference over documents both top 10s hold, and the share of
reranked queries whose top 10 order is identical. A part whose library sees no GPU (faiss-cpu beside a
CUDA torch) runs on the CPU and its line says "cpu": nothing is reported as measured on a GPU that
was not. Where neither torch nor FAISS sees a GPU, it prints one line saying so and what it would
have run, and exits 0. Meant to finish within 5 minutes on a GPU machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = Path(os.environ.get("RANKLINE_SHARED", ROOT.parent / "shared")) / "data" / "beir" / "scifact"
TOP = 10


@dataclass(frozen=True)
class Plan:
    """Where the GPU path puts each part: the device given to the encoder, to `faiss_index.place` for the
    index and to the reranker ("cpu" for a part whose library sees no GPU)."""

    encoder: str
    index: str
    reranker: str


def detect() -> tuple[int, int]:
    """(CUDA devices torch sees, GPUs FAISS sees)."""
    import torch

    from rankline.retrieval import faiss_index

    return (torch.cuda.device_count() if torch.cuda.is_available() else 0), faiss_index.gpu_count()


def plan(device: str, torch_gpus: int, faiss_gpus: int) -> Plan | None:
    """The GPU path for `device` (cuda or cuda:N) given what torch and FAISS see; None when neither sees
    a GPU (nothing to check). A library that sees none keeps its part on the CPU."""
    from rankline.retrieval import faiss_index

    if not str(device).startswith("cuda"):
        raise ValueError(f"--device must be cuda or cuda:N, got {device!r}")
    if not torch_gpus and not faiss_gpus:
        return None
    torch_device = device if torch_gpus else "cpu"
    return Plan(torch_device, device if faiss_index.index_gpus(device, faiss_gpus) else "cpu", torch_device)


def no_gpu_line(args: argparse.Namespace) -> str:
    return (f"gpu_check: no GPU here (torch.cuda sees none, FAISS sees none), so nothing was measured. On a GPU it "
            f"would encode {args.docs} SciFact documents and {args.queries} queries with all-MiniLM-L6-v2 on {args.device}, "
            f"search a flat FAISS index on the GPU, compare the top {TOP} with the CPU path, and rerank the top "
            f"{args.depth} of {args.rerank} queries with FIRST (SmolLM2-135M-Instruct) on {args.device}.")


@dataclass
class PathRun:
    """What one path (GPU or CPU) produced and how long each step took."""

    where: dict[str, str]  # encoder, index, reranker: where each ran (the index: what faiss_index.place reports)
    doc_emb: np.ndarray
    top: list[list[tuple[str, float]]]  # each query's top hits: (doc id, score)
    reranked: list[list[str]]  # each reranked query's doc ids, best first
    seconds: dict[str, float]


def run_path(where: Plan, docs, queries, args: argparse.Namespace) -> PathRun:
    """Encode, index, search and rerank with the parts placed as `where` says; the PathRun records where
    they did run."""
    import torch

    from rankline.formats import Candidates, Hit
    from rankline.rerankers import build_reranker
    from rankline.retrieval import faiss_index
    from rankline.retrieval.corpus import doc_contents
    from rankline.retrieval.encoder import DEFAULT_ENCODER, load_encoder

    def sync() -> None:
        if where.encoder.startswith("cuda") or where.reranker.startswith("cuda"):
            torch.cuda.synchronize()

    seconds: dict[str, float] = {}
    encoder = load_encoder(DEFAULT_ENCODER, device=where.encoder)
    texts = [doc_contents(d) for d in docs]
    encoder.encode_queries([q.text for q in queries[:2]])  # untimed: the first call pays for kernels and sessions
    sync()
    start = time.perf_counter()
    doc_emb = encoder.encode_documents(texts, batch_size=args.batch_size)
    query_emb = encoder.encode_queries([q.text for q in queries], batch_size=args.batch_size)
    sync()
    seconds["encode"] = time.perf_counter() - start
    start = time.perf_counter()
    index, placed = faiss_index.place(faiss_index.build(doc_emb, "Flat"), where.index)
    seconds["index"] = time.perf_counter() - start
    start = time.perf_counter()
    scores, ids = index.search(query_emb, max(TOP, args.depth))
    seconds["search"] = time.perf_counter() - start
    top = [[(docs[i].docid, float(s)) for i, s in zip(row_ids, row_scores) if i >= 0] for row_ids, row_scores in zip(ids, scores)]
    by_id = {d.docid: d for d in docs}
    reranker = build_reranker("first", device=where.reranker)
    lists = [Candidates(q, tuple(Hit(d, s, by_id[d].text, by_id[d].title) for d, s in hits[: args.depth]))
             for q, hits in zip(queries[: args.rerank], top)]
    reranker.rerank_batch(lists[:1])  # untimed: the first call pays for kernels and caches
    sync()
    start = time.perf_counter()
    reranked = [[h.docid for h in hits] for hits in reranker.rerank_batch(lists)]
    sync()
    seconds["rerank"] = time.perf_counter() - start
    ran = {"encoder": str(encoder.model.device), "index": placed, "reranker": str(reranker.lm.device)}
    return PathRun(ran, doc_emb, [hits[:TOP] for hits in top], reranked, seconds)


def agreement(gpu: PathRun, cpu: PathRun) -> dict[str, float]:
    """How far the GPU path's results are from the CPU path's."""
    overlaps, score_diffs = [], [0.0]
    for g, c in zip(gpu.top, cpu.top):
        g_scores, c_scores = dict(g), dict(c)
        shared = set(g_scores) & set(c_scores)
        overlaps.append(len(shared) / TOP)
        score_diffs += [abs(g_scores[d] - c_scores[d]) for d in shared]
    same_order = [g[:TOP] == c[:TOP] for g, c in zip(gpu.reranked, cpu.reranked)]
    return {"max embedding difference": float(np.abs(gpu.doc_emb - cpu.doc_emb).max()),
            f"mean overlap@{TOP}": float(np.mean(overlaps)), f"max score difference (shared top {TOP})": max(score_diffs),
            f"reranked queries with the same top {TOP} order": float(np.mean(same_order)) if same_order else float("nan")}


def report(gpu: PathRun, cpu: PathRun, docs: int, queries: int, reranked: int) -> str:
    counts = {"encode": docs + queries, "index": docs, "search": queries, "rerank": reranked}
    units = {"encode": "texts", "index": "docs", "search": "queries", "rerank": "queries"}
    lines = [f"{'step':<8} {'GPU path':<16} {'seconds':>9} {'per s':>9}   {'CPU path':<8} {'seconds':>9} {'per s':>9}   ratio"]
    for step in ("encode", "index", "search", "rerank"):
        where = gpu.where[{"encode": "encoder", "index": "index", "search": "index", "rerank": "reranker"}[step]]
        g, c = gpu.seconds[step], cpu.seconds[step]
        lines.append(f"{step:<8} {where:<16} {g:>9.3f} {counts[step] / g:>9.1f}   {'cpu':<8} {c:>9.3f} {counts[step] / c:>9.1f}   "
                     f"{c / g:>5.2f}x  ({counts[step]} {units[step]})")
    lines += [f"{name}: {value:.6g}" for name, value in agreement(gpu, cpu).items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="a BEIR folder (default: SciFact in the shared data)")
    parser.add_argument("--docs", type=int, default=2000, help="documents indexed (the corpus's first; default 2000)")
    parser.add_argument("--queries", type=int, default=50, help="test queries searched (default 50)")
    parser.add_argument("--rerank", type=int, default=5, help="queries reranked (default 5)")
    parser.add_argument("--depth", type=int, default=20, help="candidates reranked per query (default 20, FIRST's window)")
    parser.add_argument("--batch-size", type=int, default=64, help="encoder batch size (default 64)")
    parser.add_argument("--device", default="cuda", help="the GPU path's device: cuda or cuda:N (default cuda)")
    args = parser.parse_args(argv)
    for name in ("docs", "queries", "rerank", "depth", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    where = plan(args.device, *detect())
    if where is None:
        print(no_gpu_line(args))
        return 0
    from rankline.retrieval.corpus import iter_docs, load_queries

    docs = list(islice(iter_docs(args.corpus), args.docs))
    queries = load_queries(args.corpus, "test")[: args.queries]
    print(f"gpu_check: encoder on {where.encoder}, index on {where.index}, reranker on {where.reranker}; "
          f"{len(docs)} documents, {len(queries)} queries, {min(args.rerank, len(queries))} reranked (top {args.depth})", flush=True)
    gpu = run_path(where, docs, queries, args)
    cpu = run_path(Plan("cpu", "cpu", "cpu"), docs, queries, args)
    print(report(gpu, cpu, len(docs), len(queries), min(args.rerank, len(queries))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
