"""The `--ci` options of `rankline eval`: intervals from a few human and many LLM labels.

    rankline eval QRELS_HUMAN RUN [RUN ...] -m nDCG@10 --llm-labels FILE [FILE ...] [--label-dist FILE]
                  --ci ppi|ppi-all|ppi++|crc|bootstrap|human [--labelled-qids FILE | --labelled N --seed S]
                  [--alpha 0.05] --format json

adds to each run's JSON entry ``"ci": {"<measure>": {"method", "estimand", "estimate", "lower",
"upper", "n_labelled", "n_total"}}`` and, to every run but the baseline (the first),
``"ci_vs_baseline"`` of the same form for the mean paired difference run - baseline, and to each
run ``"ci_references": {"<measure>": {"llm_only": float, "human": {...}}}``: the mean with LLM labels
alone (over the method's estimand) and the human-only t interval, the two things the method improves
on. Only the human labels of the labelled queries are read into the intervals; ``--alpha`` is eval's
own option.

The label files are read before the runs; each run, read once, is scored by every label source as
eval scores it (rankline.evaluation.ci.TableBuilder), and every interval, paired differences
included, comes from the resulting runs x measures tables in one call.
"""
from __future__ import annotations

import argparse
from typing import Any, Mapping, Sequence

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


def check_ci_arguments(args: argparse.Namespace) -> None:
    """Refuse an inconsistent set of --ci options before any file is read."""
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


def ci_table_builder(args: argparse.Namespace, human: Mapping[str, Mapping[str, int]], measures: Sequence[str]):
    """The rankline.evaluation.ci.TableBuilder that the runs are added to as they are scored (None
    without --ci): reads the LLM label files, --label-dist and --labelled-qids, and splits the queries."""
    if args.ci is None:
        return None
    from rankline.evaluation.ci import TableBuilder, read_labelled_qids, split_queries
    from rankline.evaluation.label_dist import empirical_label_dist, read_label_dist
    from rankline.formats import read_qrels

    llm = [read_qrels(path) for path in args.llm_labels]
    universe = {qid for labels in llm for qid, docs in labels.items() if docs}
    split = split_queries(
        universe,
        human,
        labelled_qids=read_labelled_qids(args.labelled_qids) if args.labelled_qids else None,
        n_labelled=args.labelled,
        seed=args.seed,
    )
    dist = None
    if args.ci == "crc":
        dist = read_label_dist(args.label_dist) if args.label_dist else empirical_label_dist(llm)
    return TableBuilder(split, measures, human, llm, label_dist=dist)


def add_ci_entries(report: dict[str, Any], builder, args: argparse.Namespace) -> None:
    """Add "ci" (and "ci_vs_baseline") to every run entry of `report`, whose runs were added to
    `builder` in the report's order with the baseline first: every interval in one pass over the table."""
    names, measures = list(report["runs"]), report["measures"]
    table = builder.table()
    interval = table.paired(baseline=0).interval(args.ci, args.alpha, args.seed)
    human = table.interval("human", args.alpha)
    llm_only = table.llm_only(interval.estimand)

    def entries(column: int) -> dict[str, dict]:
        return {measure: interval.column((column, j)).as_dict() for j, measure in enumerate(measures)}

    for i, name in enumerate(names):
        report["runs"][name]["ci"] = entries(i)
        report["runs"][name]["ci_references"] = {
            measure: {"llm_only": float(llm_only[i, j]), "human": human.column((i, j)).as_dict()}
            for j, measure in enumerate(measures)
        }
    for k, name in enumerate(names[1:]):
        report["runs"][name]["ci_vs_baseline"] = entries(len(names) + k)
