"""BlockRank speed against its two peers, measured in one run on the same candidate lists.

- blockrank: `rankline rerank --reranker blockrank` defaults (one pass, structured attention, early exit at
  the scoring layer);
- full attention: the *same* BlockRank prompt as one ordinary causal sequence (the model's own attention,
  positions 0..T-1) through the same layers (0..scoring layer, the rest skipped), so the ratio isolates
  the attention structure;
- FIRST: sliding windows (20, stride 10) over the same top-n (rank_llm's schedule, one prefill per window).

DL 2019 BM25 candidate lists, the first --queries queries, at --sizes passages (lists repeated to reach
sizes above 100). Time is the process's CPU seconds (time.process_time) by default, because the wall clock
of a shared machine mostly measures other jobs; run with --threads 1 for CPU time that does not count
spinning threads. Goals (issue 8): full/blockrank >= 3 at 100 passages; blockrank time(500)/time(100) <= 6.

    .venv/bin/python benchmarks/blockrank_speed.py [--queries 5] [--sizes 20 100 500] [--full-max 100]
                                                   [--first-max 500] [--threads 1] [--clock cpu|wall]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any, Callable

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class _Stop(Exception):
    pass


def full_attention_forward(model: Any, input_ids: list[int], layer: int) -> None:
    """An ordinary causal forward over `input_ids` through decoder layers 0..layer (the rest never run)."""
    import torch

    layers = model.base_model.layers
    after = layers[layer + 1] if layer + 1 < len(layers) else model.base_model.norm

    def stop(*_: Any) -> None:
        raise _Stop

    handle = after.register_forward_pre_hook(stop)
    try:
        with torch.inference_mode():
            model.base_model(input_ids=torch.tensor([input_ids], device=model.device), use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()


def repeat_to(hits: tuple, n: int) -> list:
    return (list(hits) * math.ceil(n / len(hits)))[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=Path, default=DATA / "trec-dl-2019/candidates/BM25.top100.json.gz")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 100, 500])
    parser.add_argument("--full-max", type=int, default=100, help="largest size timed with full attention")
    parser.add_argument("--first-max", type=int, default=500, help="largest size timed with FIRST")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()

    import torch

    from rankline.pipelines.candidates import read_candidates
    from rankline.rerankers.blockrank import blockrank_reranker
    from rankline.rerankers.first import FirstReranker
    from rankline.rerankers.models import load_causal_lm

    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    lists = read_candidates(args.candidates)[: args.queries]
    lm = load_causal_lm(args.model, device="cpu", dtype=torch.float32)
    blockrank = blockrank_reranker(lm)
    layer = blockrank.config.layer

    def timed(fn: Callable[[], Any]) -> float:
        start = clock()
        fn()
        return clock() - start

    rows = []
    for n in args.sizes:
        per: dict[str, list[float]] = {"blockrank": [], "full": [], "first": []}
        tokens = []
        first = FirstReranker(lm, window=20, stride=10, depth=n)
        for cand in lists:
            hits = repeat_to(cand.hits, n)
            prompt = blockrank.prompt(cand.query.text, hits)
            tokens.append(sum(prompt.lengths))
            per["blockrank"].append(timed(lambda: blockrank.rerank(cand.query, hits)))
            if n <= args.full_max:
                per["full"].append(timed(lambda: full_attention_forward(lm.model, prompt.input_ids(), layer)))
            if n <= args.first_max:
                per["first"].append(timed(lambda: first.rerank(cand.query, hits)))
            print(f"  n={n} {cand.query.qid}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in per.items() if v), flush=True)
        rows.append({"passages": n, "tokens": statistics.mean(tokens),
                     **{k: statistics.mean(v) if v else None for k, v in per.items()}})

    def cell(x: float | None, fmt: str = "{:.1f}") -> str:
        return "-" if x is None else fmt.format(x)

    print(f"\nBlockRank vs full attention vs FIRST: {args.model}, layer {layer}, {len(lists)} DL 2019 BM25 queries, "
          f"{args.clock} seconds per query (threads {torch.get_num_threads()})")
    print(f"{'passages':>8} {'tokens':>7} {'blockrank':>9} {'full attn':>9} {'FIRST':>8} {'full/BR':>8} {'FIRST/BR':>8}")
    for r in rows:
        br = r["blockrank"]
        print(f"{r['passages']:>8} {r['tokens']:>7.0f} {cell(br):>9} {cell(r['full']):>9} {cell(r['first']):>8} "
              f"{cell(r['full'] and r['full'] / br, '{:.2f}x'):>8} {cell(r['first'] and r['first'] / br, '{:.2f}x'):>8}")
    by_n = {r["passages"]: r["blockrank"] for r in rows}
    if 100 in by_n and 500 in by_n:
        print(f"blockrank time(500)/time(100) = {by_n[500] / by_n[100]:.2f} (goal <= 6)")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "layer": layer, "clock": args.clock, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
