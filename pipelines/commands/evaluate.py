"""`rankline eval`: score TREC runs against qrels with trec_eval-exact measures.

    rankline eval QRELS RUN [RUN ...] -m nDCG@10 RR@10 R@100 AP [--per-query] [--complete]
                  [--format table|json|csv] [--test t|randomization|none] [--alpha 0.05] [--out FILE]
                  [--report FILE.html]
    rankline eval --list-measures

Every input file is read once: the qrels, then each run, which every label source scores before the
next is read (with --ci, see _ci_options).

The first run is the baseline: every other run is compared with it per measure by a paired test
over their common queries, Holm-corrected across the runs. The JSON output is a stable schema that
other tools read:

    {"measures": [...], "baseline": "<run>", "test": "t",
     "runs": {"<run name>": {"mean": {"<measure>": float},
                             "per_query": {"<qid>": {"<measure>": float}},
                             "significance": {"<measure>": {"p_value", "p_holm", "mean_difference",
                                                            "n_queries"}}}}}

A run's name is its file name without directories and without a trailing ``.gz``; ``significance``
is present for every run but the baseline. With ``--ci`` the table output adds a table of the
intervals. ``--report FILE.html`` also writes the report as one self-contained page
(rankline.evaluation.report): the table, per-query difference plots and, with ``--ci``, forest plots.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from rankline.pipelines.commands._ci_options import (
    add_ci_arguments,
    add_ci_entries,
    check_ci_arguments,
    ci_table_builder,
)
from rankline.pipelines.commands._deprecated import add_deprecated_alias

HELP = "score TREC runs against qrels (trec_eval-exact measures, paired significance tests)"
DEFAULT_MEASURES = ["nDCG@10", "RR@10", "R@100", "AP"]


class _ListMeasures(argparse.Action):
    """--list-measures: print the measure families and exit, like --help (no QRELS or RUN needed)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        sys.stdout.write(measure_listing())
        parser.exit()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list-measures", action=_ListMeasures,
                        help="print every measure family with its parameters and description, and exit")
    parser.add_argument("qrels", help="TREC qrels (qid iter docid rel) or BEIR qrels TSV")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="TREC run files (.gz is fine); the first is the baseline")
    parser.add_argument("-m", "--measures", nargs="+", default=DEFAULT_MEASURES, metavar="MEASURE",
                        help="ir_measures names, e.g. nDCG@10 'RR(rel=2)@10' R@100 AP P@10 Judged@10 "
                             f"\"nDCG(dcg='exp-log2')@10\" DCG@10 (default: {' '.join(DEFAULT_MEASURES)})")
    parser.add_argument("--per-query", action="store_true", help="also print every query's values (table, csv)")
    parser.add_argument("--complete", action="store_true",
                        help="score queries of the qrels missing from a run as 0 (trec_eval -c)")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    parser.add_argument("--test", choices=("t", "randomization", "none"), default="t",
                        help="paired test of each run against the first (default: t)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level of the table's markers")
    parser.add_argument("--permutations", type=int, default=10_000,
                        help="random sign flips of the randomization test (exact when 2^queries is fewer)")
    parser.add_argument("--out", type=Path, help="write here (atomically) instead of to stdout")
    add_deprecated_alias(parser, "-o", "--output", new="--out")
    parser.add_argument("--report", type=Path, metavar="FILE.html",
                        help="also write an HTML page (atomically): the table, per-query difference plots of each run "
                             "against the first and, with --ci, forest plots of the intervals")
    add_ci_arguments(parser)


def run_name(path: str | Path) -> str:
    """A run's name in reports: the file name without directories and without a trailing .gz."""
    name = Path(path).name
    return name[:-3] if name.endswith(".gz") else name


def run(args: argparse.Namespace) -> int:
    from rankline.evaluation.measures import parse_measure

    measures = [str(parse_measure(m)) for m in args.measures]  # fail on a bad name before reading files
    if not 0.0 < args.alpha < 1.0:
        raise ValueError(f"--alpha must be in (0, 1), got {args.alpha}")
    names = [run_name(p) for p in args.runs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"two runs share the name {duplicated[0]!r}; rename one of the files")

    check_ci_arguments(args)

    from rankline.formats import check_output, read_qrels

    for path in (args.out, args.report):
        if path:
            check_output(path)
    if args.report and args.report.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--report {args.report}: expected a file name ending in .html")
    if args.out and args.report and args.out.resolve() == args.report.resolve():
        raise ValueError(f"--report {args.report} is also --out; give them different names")

    qrels = read_qrels(args.qrels)
    ci_table = ci_table_builder(args, qrels, measures)
    per_query = score_runs(qrels, args.qrels, args.runs, measures, complete=args.complete, ci_table=ci_table)
    significance = compare_runs(per_query, names[0], args.test, args.permutations)
    report = {
        "measures": measures,
        "baseline": names[0],
        "test": args.test,
        "runs": {name: run_entry(per_query[name], significance.get(name)) for name in names},
    }
    if ci_table is not None:
        add_ci_entries(report, ci_table, args)
    text = render(report, args.format, per_query=args.per_query, alpha=args.alpha)
    from rankline.formats import atomic_write

    if args.report:
        from rankline.evaluation.report import report_html

        with atomic_write(args.report) as fh:
            fh.write(report_html(report, alpha=args.alpha))
    if args.out:
        with atomic_write(args.out) as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


def score_runs(qrels: Mapping[str, Mapping[str, int]], qrels_path: str, run_paths: Sequence[str],
               measures: Sequence[str], *, complete: bool, ci_table=None) -> dict[str, dict[str, dict[str, float]]]:
    """``{run name: {measure: {qid: value}}}`` for every run file, each read once; given `ci_table` (a
    rankline.evaluation.ci.TableBuilder), every run is also added to it before the next is read."""
    from tqdm import tqdm

    from rankline.evaluation.metrics import Evaluator
    from rankline.formats import read_run

    evaluator = Evaluator(qrels, measures, complete=complete)
    scores = {}
    for path in tqdm(run_paths, desc="eval", unit="run", disable=None, leave=False):
        run = read_run(path)
        results = evaluator.evaluate(run)
        if not results[measures[0]]:
            raise ValueError(f"{path}: no query in common with the qrels {qrels_path} (wrong qrels file?)")
        scores[run_name(path)] = results
        if ci_table is not None:
            ci_table.add(run)
    return scores


def compare_runs(per_query: Mapping[str, Mapping[str, Mapping[str, float]]], baseline: str, test: str,
                 permutations: int) -> dict[str, dict[str, dict[str, float]]]:
    """``{run: {measure: {"p_value", "p_holm", "mean_difference", "n_queries"}}}`` against the baseline."""
    if test == "none" or len(per_query) < 2:
        return {}
    from rankline.evaluation.significance import compare_to_baseline

    options = {"n_permutations": permutations} if test == "randomization" else {}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for c in compare_to_baseline(per_query, baseline, test=test, **options):
        out.setdefault(c.run, {})[c.measure] = {
            "p_value": c.p_value, "p_holm": c.p_holm, "mean_difference": c.mean_difference, "n_queries": c.n_queries,
        }
    return out


def run_entry(results: Mapping[str, Mapping[str, float]],
              significance: Mapping[str, Mapping[str, float]] | None) -> dict[str, Any]:
    """One run's entry of the JSON report (the place to add further per-run keys)."""
    from rankline.evaluation.metrics import mean_scores

    per_query: dict[str, dict[str, float]] = {}
    for measure, values in results.items():
        for qid, value in values.items():
            per_query.setdefault(qid, {})[measure] = value
    entry: dict[str, Any] = {"mean": mean_scores(results), "per_query": per_query}
    if significance is not None:
        entry["significance"] = dict(significance)
    return entry


# ------------------------------------------------------------------------------------------ output


def measure_listing() -> str:
    """Every registered measure family: how it is written, its description and its parameters."""
    from rankline.evaluation.measures import FAMILIES, usage

    blocks = []
    for family in FAMILIES.values():
        params = family.parameters()
        written = family.name + (f"({','.join(usage(p) for p in params)})" if params else "")
        written += "@k" if family.cutoff_required else "[@k]"
        also = f"   (also {', '.join(family.aliases)})" if family.aliases else ""
        lines = [written + also, f"    {family.description}"]
        lines.append("    @k    rank cutoff " + ("(required)" if family.cutoff_required else "(default: every rank)"))
        lines += [f"    {p.name:<5} {p.metadata['help']}; default {p.default!r}" for p in params]
        blocks.append("\n".join(lines))
    return "measure families (ir_measures names; parameters in parentheses are optional):\n\n" + "\n\n".join(blocks) + "\n"



def render(report: Mapping[str, Any], fmt: str, *, per_query: bool, alpha: float) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2) + "\n"
    rows = _rows(report, per_query)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["run", "qid", *report["measures"]])
        writer.writerows([run, qid, *(repr(v) for v in values)] for run, qid, values, _ in rows)
        return buffer.getvalue()
    return _table(report, rows, alpha)


def _rows(report: Mapping[str, Any], per_query: bool) -> list[tuple[str, str, list[float], str]]:
    """(run, qid or 'all', values in measure order, number of queries) for each output row."""
    measures = report["measures"]
    rows = []
    for name, entry in report["runs"].items():
        if per_query:
            rows += [(name, qid, [values[m] for m in measures], "") for qid, values in sorted(entry["per_query"].items())]
        rows.append((name, "all", [entry["mean"][m] for m in measures], str(len(entry["per_query"]))))
    return rows


def _table(report: Mapping[str, Any], rows: list[tuple[str, str, list[float], str]], alpha: float) -> str:
    measures, runs = report["measures"], report["runs"]
    per_query = any(qid != "all" for _, qid, _, _ in rows)
    header = ["run", *(["qid"] if per_query else []), "queries", *measures]
    body = []
    for run, qid, values, n in rows:
        significance = runs[run].get("significance", {}) if qid == "all" else {}
        cells = [f"{v:.4f}" + ("*" if significance.get(m, {}).get("p_holm", 1.0) < alpha else " ")
                 for m, v in zip(measures, values)]
        body.append([run, *([qid] if per_query else []), n, *cells])
    lines = _aligned(header, body, numeric_from=header.index("queries"))
    if report["test"] != "none" and len(runs) > 1:
        test = {"t": "paired t-test", "randomization": "randomization test"}[report["test"]]
        lines.append(f"* p < {alpha:g} against {report['baseline']} ({test}, Holm-corrected over {len(runs) - 1} runs)")
    if all("ci" in entry for entry in runs.values()):
        lines += ["", *_ci_table(report, alpha)]
    return "\n".join(lines) + "\n"


def _ci_table(report: Mapping[str, Any], alpha: float) -> list[str]:
    """The --ci intervals: per run and measure the LLM-only mean, the human-only t interval and the
    method's interval; then the method's interval of each run's difference from the baseline."""
    measures, runs = report["measures"], report["runs"]
    first = next(iter(runs.values()))["ci"][measures[0]]
    method = first["method"]
    over = (f"mean over all {first['n_total']} queries" if first["estimand"] == "all"
            else f"mean over the {first['n_total'] - first['n_labelled']} queries without human labels")

    def interval(entry: Mapping[str, float]) -> str:
        return f"{entry['estimate']:.4f} [{entry['lower']:.4f}, {entry['upper']:.4f}]"

    header = ["run", "measure", "LLM only", "human only", method]
    body = []
    for name, entry in runs.items():
        for m in measures:
            ref = entry["ci_references"][m]
            body.append([name, m, f"{ref['llm_only']:.4f}", interval(ref["human"]), interval(entry["ci"][m])])
    for name, entry in runs.items():
        for m, ci in entry.get("ci_vs_baseline", {}).items():
            body.append([f"{name} - {report['baseline']}", m, "", "", interval(ci)])
    title = (f"{100 * (1 - alpha):g}% intervals for the {over}, {first['n_labelled']} with human labels "
             f"(--ci {method})")
    return [title, *_aligned(header, body, numeric_from=2)]


def _aligned(header: list[str], body: list[list[str]], *, numeric_from: int) -> list[str]:
    """Rows as lines of columns two spaces apart, text left-aligned, numbers (from column
    `numeric_from`) right-aligned, with a rule under the header."""
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) if i < numeric_from else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines
