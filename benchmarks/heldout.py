"""A reranker (FIRST or BlockRank) on held-out training queries: the untuned model against trained adapters.

A tuned adapter ships only when it beats the untuned model on queries it never trained on. FIRST is scored
with the candidates in first-stage order (where the untuned model's positional prior already helps) and
shuffled (where keeping the given order is worth nothing, so only ranking counts); BlockRank, whose blocks
share their positions and see only themselves, in first-stage order alone. This prints nDCG@10 (against the
training qrels) of the first stage, the untuned model and each adapter, with the paired t-test of each
adapter against the untuned model on the same order. With `--rrf`, each reranker also gets a row fused with
the first stage it reranked (reciprocal rank fusion, k 60, no weight to tune), tested against the first stage.

    python benchmarks/heldout.py --run out/first-train/scifact-train-bm25.trec \\
        --topics ../shared/data/beir/scifact/queries.jsonl --corpus ../shared/data/beir/scifact/corpus.jsonl \\
        --qrels ../shared/data/beir/scifact/qrels/train.tsv --qids runs/first-scifact-lora/held-out-qids.txt \\
        --reranker first --depth 10 --context-size 1280 --adapter runs/first-scifact-lora/best

With `--reranker blockrank`, `--depth` may be any size and `--max-block-tokens` must be the one trained with.

`--qids` is the `held-out-qids.txt` that `rankline train` writes: never test queries, never test qrels.
"""
from __future__ import annotations

import argparse
import random

from rankline.evaluation.metrics import evaluate, mean
from rankline.evaluation.significance import paired_t_test
from rankline.formats import Candidates, Hit, read_candidates, read_qrels
from rankline.rerankers import build_reranker
from rankline.rerankers.models import DEFAULT_MODEL
from rankline.retrieval.fusion import fuse_runs

MEASURE = "nDCG@10"


def as_run(lists: list[list[Hit]], qids: list[str]) -> dict[str, dict[str, float]]:
    return {qid: {h.docid: h.score for h in hits} for qid, hits in zip(qids, lists)}


def shuffled(c: Candidates, seed: int) -> Candidates:
    """The same candidates in a seeded random order, rescored so that the order is the given one."""
    hits = list(c.hits)
    random.Random(f"{seed}/{c.query.qid}").shuffle(hits)
    return Candidates(c.query, tuple(Hit(h.docid, float(len(hits) - i), h.text, h.title) for i, h in enumerate(hits)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="first-stage run (TREC, with --topics and --corpus)")
    parser.add_argument("--topics", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--qrels", required=True, help="training qrels")
    parser.add_argument("--qids", required=True, help="held-out qids, one a line (rankline train's held-out-qids.txt)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--adapter", action="append", default=[], help="an adapter folder (repeatable)")
    parser.add_argument("--reranker", choices=["first", "blockrank"], default="first")
    parser.add_argument("--depth", type=int, default=10, help="candidates per query; FIRST: one window (default 10)")
    parser.add_argument("--context-size", type=int, default=4096, help="FIRST prompt budget in tokens (default 4096)")
    parser.add_argument("--max-block-tokens", type=int, default=384, help="BlockRank block size cap (default 384)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled order (default 0)")
    parser.add_argument("--rrf", action="store_true",
                        help="also each reranker fused with the first stage (RRF, k 60), tested against the first stage")
    args = parser.parse_args()

    wanted = [q for q in open(args.qids, encoding="utf-8").read().split() if q]
    lists = {c.query.qid: c for c in read_candidates(args.run, topics=args.topics, corpus=args.corpus)}
    missing = [q for q in wanted if q not in lists]
    if missing:
        raise SystemExit(f"{args.run}: no candidates for {len(missing)} held-out queries (e.g. {missing[0]})")
    ordered = [Candidates(lists[q].query, tuple(lists[q].hits[:args.depth])) for q in wanted]
    orders = {"first-stage order": ordered}
    if args.reranker == "first":
        orders["shuffled"] = [shuffled(c, args.seed) for c in ordered]
    qrels = read_qrels(args.qrels)

    def scores(run: dict[str, dict[str, float]]) -> list[float]:
        per_query = evaluate(qrels, run, [MEASURE])[MEASURE]
        return [per_query.get(q, 0.0) for q in wanted]

    options = {"first": {"window": args.depth, "context_size": args.context_size},
               "blockrank": {"max_block_tokens": args.max_block_tokens}}[args.reranker]
    systems = [("untuned", None)] + [(a, a) for a in args.adapter]
    table: dict[tuple[str, str], list[float]] = {}
    baseline: dict[str, str] = {}  # the row each row is tested against
    first_stage = {order: as_run([list(c.hits) for c in cands], wanted) for order, cands in orders.items()}
    for order in orders:
        table["first stage", order] = scores(first_stage[order])
    for name, adapter in systems:
        reranker = build_reranker(args.reranker, args.model, adapter=adapter, **options)
        fused = f"{name} + first stage (RRF)"
        if name != "untuned":
            baseline[name] = "untuned"
        if args.rrf:
            baseline[fused] = "first stage"
        for order, cands in orders.items():
            reranked = as_run(reranker.rerank_batch(cands), wanted)
            table[name, order] = scores(reranked)
            if args.rrf:
                table[fused, order] = scores(fuse_runs([first_stage[order], reranked], "rrf"))
    setting = ", ".join(f"{k} {v}" for k, v in options.items())
    print(f"{len(wanted)} held-out queries of {args.qrels}; {args.reranker} ({args.model}) over the top {args.depth} "
          f"of {args.run}, {setting}; {MEASURE}; p: paired t-test against untuned (fused rows: against the first stage)")
    print(f"{'system':<48}" + "".join(f"{o:>20}{'p':>8}" for o in orders))
    for name in dict.fromkeys(name for name, _ in table):
        row = f"{name[-48:]:<48}"
        for order in orders:
            values = table[name, order]
            p = f"{paired_t_test(values, table[baseline[name], order]).p_value:.3f}" if name in baseline else ""
            row += f"{mean(dict(enumerate(values))):>20.4f}{p:>8}"
        print(row)


if __name__ == "__main__":
    main()
