"""Reranking speed: FIRST against listwise generation and query likelihood, in one run.

    python benchmarks/rerank_speed.py [--queries 5] [--model smollm2-135m-instruct] [--depth 100]
                                      [--window 20 --stride 10] [--rerankers first listwise query-likelihood]

Reranks the BM25 top-DEPTH of the first QUERIES TREC DL 2019 queries with each reranker (same model,
same candidates, same process) and prints, per reranker, wall-clock and process-CPU seconds per query
and the ratios to FIRST. CPU time is the fairer number on a shared machine: other processes slow down
the wall clock but not this process's CPU seconds. Any name of rankline.rerankers.registry can be
listed in --rerankers (e.g. blockrank); options a reranker does not take are not passed to it.
BlockRank's sweep over 20/100/500 passages against full causal attention over the same prompt is
benchmarks/blockrank_speed.py.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

SHARED = Path(os.environ.get("RANKLINE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
CANDIDATES = SHARED / "data" / "trec-dl-2019" / "candidates" / "BM25.top100.json.gz"
BASELINE = "first"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--stride", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1, help="sequences per forward pass (windows or pairs)")
    parser.add_argument("--dtype", default=None, help="model dtype (default: fp32 on CPU, bf16 on GPU)")
    parser.add_argument("--rerankers", nargs="+", default=["first", "listwise", "query-likelihood"])
    parser.add_argument("--candidates", type=Path, default=CANDIDATES)
    args = parser.parse_args(argv)

    import torch

    from rankline.pipelines.candidates import read_candidates
    from rankline.rerankers.models import load_causal_lm
    from rankline.rerankers.registry import build_reranker, reranker_options

    lists = read_candidates(args.candidates)[: args.queries]
    lm = load_causal_lm(args.model, dtype=args.dtype)
    wanted = {"window": args.window, "stride": args.stride, "depth": args.depth, "batch_size": args.batch_size}
    rows = []
    for name in args.rerankers:
        options = {k: v for k, v in wanted.items() if k in reranker_options(name)}
        reranker = build_reranker(name, lm, **options)
        wall, cpu = time.perf_counter(), time.process_time()
        for cand in lists:
            reranker.rerank(cand.query, cand.hits)
        if lm.device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows.append((name, wall / len(lists), cpu / len(lists)))
        print(f"  {name}: {wall / len(lists):.1f} s/query wall, {cpu / len(lists):.1f} s/query CPU", file=sys.stderr)

    base = {name: (w, c) for name, w, c in rows}.get(BASELINE)
    print(f"\nmodel {args.model} ({lm.model.dtype}, {lm.device}, {torch.get_num_threads()} threads); "
          f"{len(lists)} DL 2019 BM25 queries, top {args.depth}, window {args.window}, stride {args.stride}")
    print(f"{'reranker':<18} {'wall s/query':>12} {'CPU s/query':>12} {'wall / FIRST':>13} {'CPU / FIRST':>12}")
    for name, w, c in rows:
        ratio_w = f"{w / base[0]:.2f}x" if base else "-"
        ratio_c = f"{c / base[1]:.2f}x" if base else "-"
        print(f"{name:<18} {w:>12.2f} {c:>12.2f} {ratio_w:>13} {ratio_c:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
