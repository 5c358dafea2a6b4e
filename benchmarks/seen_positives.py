"""Did a tuned reranker learn relevance, or the passages it was shown as positives? nDCG@10 of runs split by
whether a query's positives were training positives.

In a collection whose queries share relevant passages (SciFact's claims cite shared abstracts), a reranker
can gain on unseen queries by recognising passages it was trained on as positives. This splits the scored
queries in two: those with a positive passage (grade > 0 in `--qrels`) that is also a positive of a
trained-on query (`--train-qrels` minus the `--held-out` qids, which were never trained on), and the others,
and prints each run's mean nDCG@10 over all, seen and unseen queries. A gain that sits only in the seen part
will not carry to another collection.

    python benchmarks/seen_positives.py --train-qrels ../shared/data/beir/scifact/qrels/train.tsv \\
        --held-out rerankers/tuned/blockrank-scifact/held-out-qids.txt \\
        --qrels ../shared/data/beir/scifact/qrels/test.tsv RUN [RUN ...]

`rankline train --held-out-disjoint` keeps held-out queries out of the seen part altogether.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from rankline.evaluation.metrics import evaluate, mean
from rankline.formats import read_qrels, read_run

MEASURE = "nDCG@10"


def positives(judgments) -> set[str]:
    return {docid for docid, grade in judgments.items() if grade > 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-qrels", required=True, help="the qrels the reranker was trained with")
    parser.add_argument("--held-out", help="qids of --train-qrels never trained on, one a line (held-out-qids.txt)")
    parser.add_argument("--qrels", required=True, help="the qrels the runs are scored with")
    parser.add_argument("runs", nargs="+", help="TREC runs")
    args = parser.parse_args()

    held = set(Path(args.held_out).read_text().split()) if args.held_out else set()
    taught = set().union(*(positives(j) for q, j in read_qrels(args.train_qrels).items() if q not in held))
    qrels = read_qrels(args.qrels)
    seen = {q for q, j in qrels.items() if positives(j) & taught}
    print(f"{args.qrels}: {MEASURE}; seen: queries with a positive that is a training positive of {args.train_qrels}")
    width = max(len(Path(r).name) for r in args.runs)
    print(f"{'run':<{width}}  {'all':>7}  {'seen':>7}  {'unseen':>7}  queries (seen / unseen)")
    for path in args.runs:
        per_query = evaluate(qrels, read_run(path), [MEASURE])[MEASURE]
        parts = [{q: v for q, v in per_query.items() if (q in seen) == flag} for flag in (True, False)]
        print(f"{Path(path).name:<{width}}  {mean(per_query):7.4f}  {mean(parts[0]):7.4f}  {mean(parts[1]):7.4f}  "
              f"{len(per_query)} ({len(parts[0])} / {len(parts[1])})")


if __name__ == "__main__":
    main()
