"""The `--ci` options of `rankline eval`: intervals from a few human and many LLM labels.

    rankline eval QRELS_HUMAN RUN [RUN ...] -m nDCG@10 --llm-labels FILE [FILE ...] [--label-dist FILE]
                  --ci ppi|ppi-all|ppi++|crc|bootstrap|human [--labelled-qids FILE | --labelled N --seed S]
                  [--alpha 0.05] --format json

adds to each run's JSON entry ``"ci": {"<measure>": {"method", "estimand", "estimate", "lower",
"upper", "n_labelled", "n_total"}}`` and, to every run but the baseline (the first),
``"ci_vs_baseline"`` of the same form for the mean paired difference run - baseline. Only the human
labels of the labelled queries are read into the intervals; ``--alpha`` is eval's own option.
"""
from __future__ import annotations

import argparse
from typing import Any

CI_CHOICES = ("ppi", "ppi-all", "ppi++", "crc", "bootstrap", "human")


def add_ci_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "confidence intervals from LLM labels",
        "human labels (QRELS) on a few queries, LLM labels on all: ppi = PPI for the mean over the unlabelled "
        "queries (ppi_py), ppi-all = PPI for the mean over all queries (finite-population corrected), ppi++ = "
        "power-tuned PPI, crc = conformal risk control on DCG@k, bootstrap / human = human labels only",
    )
    group.add_argument("--ci", choices=CI_CHOICES, help="interval method (adds 'ci' to the JSON report)")
    group.add_argument("--llm-labels", nargs="+", metavar="FILE", default=[],
                       help="LLM relevance labels as qrels; several files are averaged (and give CRC its distribution)")
    group.add_argument("--label-dist", metavar="FILE",
                       help="per-document label distributions 'qid docid p0 p1 p2 p3' for CRC (from `rankline label`)")
    which = group.add_mutually_exclusive_group()
    which.add_argument("--labelled-qids", metavar="FILE",
                       help="the queries whose human labels may be used, one per line; all others are ignored")
    which.add_argument("--labelled", type=int, metavar="N", help="draw N labelled queries at random (with --seed)")
    group.add_argument("--seed", type=int, default=0, help="seed of the random draw, bootstrap and cross-fitting")


def add_ci_entries(report: dict[str, Any], args: argparse.Namespace) -> None:
    """Add "ci" (and "ci_vs_baseline") to every run entry of `report` when --ci was given."""
    if args.ci is None:
        if args.llm_labels or args.label_dist or args.labelled_qids or args.labelled is not None:
            raise ValueError("--llm-labels, --label-dist, --labelled-qids and --labelled need --ci METHOD")
        return
    if not args.llm_labels:
        raise ValueError(f"--ci {args.ci} needs --llm-labels FILE [FILE ...]")
    if args.label_dist and args.ci != "crc":
        raise ValueError(f"--label-dist is read by --ci crc only, not by --ci {args.ci}")
    if args.labelled_qids is None and args.labelled is None:
        raise ValueError(f"--ci {args.ci} needs --labelled-qids FILE or --labelled N")
    from rankline.evaluation.ci import confidence_interval, read_labelled_qids, split_queries
    from rankline.formats import read_qrels, read_run
    from rankline.evaluation.label_dist import read_label_dist
    from rankline.pipelines.commands.evaluate import run_name

    human = read_qrels(args.qrels)
    llm = [read_qrels(path) for path in args.llm_labels]
    dist = read_label_dist(args.label_dist) if args.label_dist else None
    universe = {qid for labels in llm for qid, docs in labels.items() if docs}
    split = split_queries(
        universe,
        human,
        labelled_qids=read_labelled_qids(args.labelled_qids) if args.labelled_qids else None,
        n_labelled=args.labelled,
        seed=args.seed,
    )
    runs = {run_name(path): read_run(path) for path in args.runs}
    baseline = report["baseline"]

    def entries(run, against=None) -> dict[str, dict]:
        return {
            measure: confidence_interval(
                args.ci, human_qrels=human, llm_labels=llm, run=run, measure=measure, split=split,
                alpha=args.alpha, label_dist=dist, baseline=against, seed=args.seed,
            ).as_dict()
            for measure in report["measures"]
        }

    for name, run in runs.items():
        entry = report["runs"][name]
        entry["ci"] = entries(run)
        if name != baseline:
            entry["ci_vs_baseline"] = entries(run, runs[baseline])
