"""Evaluation speed: rankline.evaluation.metrics against pytrec_eval-terrier and ir_measures.

Each tool gets the same in-memory qrels and runs (dicts, as all three accept), builds its evaluator
from the qrels once, then scores every run for the same measures per query; the best of --repeats
wall-clock times is reported, with the ratio rankline / peer (<= 1.0 means rankline is as fast or
faster). Workloads: (a) all TREC DL 2021 participant runs in the shared data, (b) a synthetic run of
--queries x --docs with float scores and 100 graded judgments per query. The per-query values of the
three tools are checked to agree before anything is timed. A last row times reading the DL 2021
run files into those dicts (rankline's reader also validates every line).

    .venv/bin/python benchmarks/eval_speed.py [--data ../shared/data] [--queries 10000] [--docs 1000]
"""
from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path
from typing import Callable, Mapping

import ir_measures
import numpy as np
import pytrec_eval

from rankline.formats import open_text, read_qrels, read_run
from rankline.evaluation.metrics import Evaluator

# ours -> pytrec_eval (trec_eval) names; ir_measures takes our names as they are
MEASURES = {"nDCG@10": "ndcg_cut_10", "P@10": "P_10", "R@100": "recall_100", "AP": "map", "RR": "recip_rank"}

Qrels = Mapping[str, Mapping[str, int]]
Runs = list[Mapping[str, Mapping[str, float]]]
PerQuery = list[dict[str, dict[str, float]]]  # one {measure: {qid: value}} per run


def with_rankline(qrels: Qrels, runs: Runs) -> PerQuery:
    evaluator = Evaluator(qrels, list(MEASURES))
    return [evaluator.evaluate(run) for run in runs]


def with_pytrec_eval(qrels: Qrels, runs: Runs) -> PerQuery:
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, set(MEASURES.values()))
    out = []
    for run in runs:
        res = evaluator.evaluate(run)
        out.append({ours: {q: v[te] for q, v in res.items()} for ours, te in MEASURES.items()})
    return out


def with_ir_measures(qrels: Qrels, runs: Runs) -> PerQuery:
    evaluator = ir_measures.evaluator([ir_measures.parse_measure(m) for m in MEASURES], qrels)
    out = []
    for run in runs:
        per_query: dict[str, dict[str, float]] = {m: {} for m in MEASURES}
        for metric in evaluator.iter_calc(run):
            per_query[str(metric.measure)][metric.query_id] = metric.value
        out.append(per_query)
    return out


TOOLS: dict[str, Callable[[Qrels, Runs], PerQuery]] = {
    "rankline": with_rankline, "pytrec_eval": with_pytrec_eval, "ir_measures": with_ir_measures,
}


def max_difference(a: PerQuery, b: PerQuery) -> float:
    worst = 0.0
    for run_a, run_b in zip(a, b, strict=True):
        for measure, values in run_a.items():
            assert values.keys() == run_b[measure].keys(), f"{measure}: different query sets"
            worst = max(worst, max((abs(v - run_b[measure][q]) for q, v in values.items()), default=0.0))
    return worst


def synthetic(n_queries: int, n_docs: int, seed: int) -> tuple[Qrels, Runs]:
    """A run of n_queries x n_docs random scores; 100 judgments per query, half of them retrieved."""
    rng = np.random.default_rng(seed)
    qrels, run = {}, {}
    for q in range(n_queries):
        docs = rng.choice(10 * n_docs, n_docs, replace=False)
        run[f"q{q}"] = dict(zip((f"d{d}" for d in docs.tolist()), rng.random(n_docs).tolist()))
        judged = np.concatenate([docs[:50], rng.choice(10 * n_docs, 50)])
        qrels[f"q{q}"] = dict(zip((f"d{d}" for d in judged.tolist()), rng.integers(0, 4, len(judged)).tolist()))
    return qrels, [run]


def read_with_rankline(paths: list[Path]) -> Runs:
    return [read_run(p) for p in paths]


def read_with_pytrec_eval(paths: list[Path]) -> Runs:
    out = []
    for path in paths:
        with open_text(path) as fh:
            out.append(pytrec_eval.parse_run(fh))
    return out


def read_with_ir_measures(paths: list[Path]) -> Runs:
    out = []
    for path in paths:
        run: dict[str, dict[str, float]] = {}
        for doc in ir_measures.read_trec_run(str(path)):
            run.setdefault(doc.query_id, {})[doc.doc_id] = doc.score
        out.append(run)
    return out


READERS: dict[str, Callable[[list[Path]], Runs]] = {
    "rankline": read_with_rankline, "pytrec_eval": read_with_pytrec_eval, "ir_measures": read_with_ir_measures,
}


def _time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _row(name: str, t: Mapping[str, float], note: str) -> str:
    return (f"{name:<26} {t['rankline']:>11.3f} {t['pytrec_eval']:>14.3f} {t['ir_measures']:>14.3f} "
            f"{t['rankline'] / t['pytrec_eval']:>15.2f} {t['rankline'] / t['ir_measures']:>15.2f} {note:>11}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--docs", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    dl21 = args.data / "trec-dl-2021"
    run_paths = sorted((dl21 / "runs").glob("*.gz"))
    workloads = {
        f"DL 2021, {len(run_paths)} runs": (read_qrels(dl21 / "qrels-pass.txt"), [read_run(p) for p in run_paths]),
        f"synthetic {args.queries}x{args.docs}": synthetic(args.queries, args.docs, args.seed),
    }
    print(f"measures: {' '.join(MEASURES)}; best of {args.repeats} wall-clock runs per tool\n")
    header = f"{'workload':<26} {'rankline s':>11} {'pytrec_eval s':>14} {'ir_measures s':>14} {'vs pytrec_eval':>15} {'vs ir_measures':>15} {'max |diff|':>11}"
    print(header)
    print("-" * len(header))
    for name, (qrels, runs) in workloads.items():
        outputs = {tool: fn(qrels, runs) for tool, fn in TOOLS.items()}  # warm-up and agreement check
        diff = max(max_difference(outputs["rankline"], outputs[peer]) for peer in ("pytrec_eval", "ir_measures"))
        del outputs
        t = {tool: _time(lambda fn=fn: fn(qrels, runs), args.repeats) for tool, fn in TOOLS.items()}
        print(_row(name, t, f"{diff:.1e}"))
    parsed = {tool: fn(run_paths) for tool, fn in READERS.items()}
    assert all(p == parsed["rankline"] for p in parsed.values()), "readers disagree"
    t = {tool: _time(lambda fn=fn: fn(run_paths), args.repeats) for tool, fn in READERS.items()}
    print(_row("read DL 2021 run files", t, "(parsing)"))
    print("\nratio = rankline time / peer time (<= 1.0: rankline as fast or faster); the last row times\n"
          "reading the run files (rankline also validates every line), the others scoring in memory")


if __name__ == "__main__":
    main()
