"""pt.Experiment next to `rankline eval` on the same run files: the two tables, and their largest differences.

    .venv/bin/python benchmarks/pyterrier_parity.py [--qrels FILE] [--runs RUN ...] [-m MEASURE ...]

Defaults: the TREC DL 2019 passage qrels and six runs of the shared data (three first stages, three
participant runs). Both sides read the same files: rankline through `rankline eval --format json` (the
command people run), PyTerrier through rankline's readers turned into its frames (formats/pyterrier.py),
because PyTerrier reads TREC runs with its own reader that sorts and ranks ties its own way. PyTerrier
gets ir_measures' measure objects (it parses only trec_eval's names from text) and the first run as its
baseline, so its paired t-test p-values stand beside rankline's unadjusted ones.

A measure that ir_measures computes with a provider other than pytrec_eval can break tied scores in
another order than trec_eval (RR with a cut-off: the msmarco provider, docid ascending); on runs with
ties its numbers then differ from trec_eval's and rankline's, and the script names it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

DL19 = Path(__file__).resolve().parents[2] / "shared" / "data" / "trec-dl-2019"
RUNS = [DL19 / "candidates" / f"{name}.trec" for name in ("BM25", "D_BERT_KD_TASB", "SPLADE_P_P_ENSEMBLE_DISTIL")] + [
    DL19 / "runs" / name for name in ("ICT-BERT2", "ICT-CKNRM_B", "ICT-CKNRM_B50")]
MEASURES = ["nDCG@10", "RR(rel=2)@10", "R(rel=2)@100", "AP(rel=2)", "P(rel=2)@10"]


def rankline_eval(qrels: Path, runs: list[Path], measures: list[str]) -> dict:
    command = [sys.executable, "-m", "rankline.pipelines.cli", "eval", str(qrels), *map(str, runs), "-m", *measures,
               "--format", "json"]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qrels", type=Path, default=DL19 / "qrels.dl19-passage.txt")
    parser.add_argument("--runs", type=Path, nargs="+", default=RUNS, help="TREC runs; the first is the baseline")
    parser.add_argument("-m", "--measures", nargs="+", default=MEASURES)
    args = parser.parse_args()

    import ir_measures
    import pandas as pd
    import pyterrier as pt

    from rankline.formats import read_qrels, read_run
    from rankline.formats.pyterrier import qrels_frame, run_frame

    ours = rankline_eval(args.qrels, args.runs, args.measures)
    names = list(ours["runs"])
    qrels = read_qrels(args.qrels)
    runs = [read_run(path) for path in args.runs]
    topics = pd.DataFrame({"qid": sorted(set(qrels))})
    measures = [ir_measures.parse_measure(m) for m in args.measures]
    theirs = pt.Experiment([run_frame(run) for run in runs], topics, qrels_frame(qrels), measures, names=names,
                           baseline=0).set_index("name")

    width = max(map(len, names))
    print(f"{len(names)} runs, {len(topics)} judged queries, qrels {args.qrels}")
    print("pt.Experiment (ir_measures' names; p-values: paired t-test against the first run)")
    print(theirs[[str(m) for m in measures]].to_string(float_format=lambda v: f"{v:.4f}"))
    print("\nrankline eval --format json (means)")
    print(f"{'name':<{width}}  " + "  ".join(f"{m:>12}" for m in args.measures))
    for name in names:
        print(f"{name:<{width}}  " + "  ".join(f"{ours['runs'][name]['mean'][m]:12.4f}" for m in args.measures))

    print("\nlargest |pt.Experiment - rankline eval| over the runs")
    worst_mean = worst_p = 0.0
    for m in args.measures:
        mean_gap = max(abs(theirs.loc[n, m] - ours["runs"][n]["mean"][m]) for n in names)
        p_gap = max((abs(theirs.loc[n, f"{m} p-value"] - ours["runs"][n]["significance"][m]["p_value"])
                     for n in names[1:]), default=0.0)
        worst_mean, worst_p = max(worst_mean, mean_gap), max(worst_p, p_gap)
        provider = next(p.NAME for p in ir_measures.DefaultPipeline.providers if p.supports(ir_measures.parse_measure(m)))
        note = "" if provider == "pytrec_eval" else f"  (ir_measures computes it with {provider}: ties may be ordered otherwise)"
        print(f"  {m:<14} mean {mean_gap:.2e}   t-test p {p_gap:.2e}{note}")
    print(f"overall: mean {worst_mean:.2e}, p-value {worst_p:.2e}")


if __name__ == "__main__":
    main()
