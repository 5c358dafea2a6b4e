"""Evaluation speed, end to end: rankline against pytrec_eval-terrier, ir_measures and ranx.

Each tool reads the TREC qrels and run files from disk with its own reader into its own structures
(rankline: read_qrels / read_run, which check every line; pytrec_eval: parse_qrel / parse_run on a
file object; ir_measures: read_trec_qrels / read_trec_run; ranx: Qrels.from_file / Run.from_file,
kind "trec", or "gz" for gzipped runs), then scores every run for the same measures per query.
Workloads: (a) all TREC DL 2021 participant runs in the shared data, (b) a synthetic run of
--queries x --docs random float scores with 100 graded judgments per query, written to temporary
TREC files first.

The per-query values of every tool are compared with rankline's before anything is timed (that pass
is also every tool's warm-up: ranx's numba code is compiled there). Then each tool runs --repeats
times, the tools taking turns so that other load on a shared machine falls on all of them; the
best wall-clock time of each phase is reported, with the ratio rankline / peer (<= 1.0: rankline as
fast or faster). ranx is timed warm; its cold time (the first call in a fresh process, numba
compiling, and with numba's on-disk cache) is measured in child processes and printed below.

    .venv/bin/python benchmarks/eval_speed.py [--data ../shared/data] [--queries 10000] [--docs 1000]
"""
from __future__ import annotations

import argparse
import gc
import gzip
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

MEASURES = ["nDCG@10", "P@10", "R@100", "AP", "RR"]  # rankline's and ir_measures' names
TREC_EVAL = {"nDCG@10": "ndcg_cut_10", "P@10": "P_10", "R@100": "recall_100", "AP": "map", "RR": "recip_rank"}
RANX = {"nDCG@10": "ndcg@10", "P@10": "precision@10", "R@100": "recall@100", "AP": "map", "RR": "mrr"}
TOOLS = ["rankline", "pytrec_eval", "ir_measures", "ranx"]
PEERS = TOOLS[1:]

PerQuery = list[dict[str, dict[str, float]]]  # one {measure: {qid: value}} per run
Timed = tuple[PerQuery, float, float]  # per-query values, seconds reading, seconds scoring


def with_rankline(qrels_path: Path, run_paths: list[Path]) -> Timed:
    from rankline.evaluation.metrics import Evaluator
    from rankline.formats import read_qrels, read_run

    start = time.perf_counter()
    qrels = read_qrels(qrels_path)
    runs = [read_run(p) for p in run_paths]
    read = time.perf_counter()
    evaluator = Evaluator(qrels, MEASURES)
    out = [evaluator.evaluate(run) for run in runs]
    return out, read - start, time.perf_counter() - read


def _open(path: Path):
    return gzip.open(path, "rt") if path.name.endswith(".gz") else open(path)


def with_pytrec_eval(qrels_path: Path, run_paths: list[Path]) -> Timed:
    import pytrec_eval

    start = time.perf_counter()
    with _open(qrels_path) as fh:
        qrels = pytrec_eval.parse_qrel(fh)
    runs = []
    for path in run_paths:
        with _open(path) as fh:
            runs.append(pytrec_eval.parse_run(fh))
    read = time.perf_counter()
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, set(TREC_EVAL.values()))
    out = []
    for run in runs:
        res = evaluator.evaluate(run)
        out.append({ours: {q: v[te] for q, v in res.items()} for ours, te in TREC_EVAL.items()})
    return out, read - start, time.perf_counter() - read


def with_ir_measures(qrels_path: Path, run_paths: list[Path]) -> Timed:
    import ir_measures

    start = time.perf_counter()
    qrels = list(ir_measures.read_trec_qrels(str(qrels_path)))
    runs = [list(ir_measures.read_trec_run(str(p))) for p in run_paths]
    read = time.perf_counter()
    evaluator = ir_measures.evaluator([ir_measures.parse_measure(m) for m in MEASURES], qrels)
    out = []
    for run in runs:
        per_query: dict[str, dict[str, float]] = {m: {} for m in MEASURES}
        for metric in evaluator.iter_calc(run):
            per_query[str(metric.measure)][metric.query_id] = metric.value
        out.append(per_query)
    return out, read - start, time.perf_counter() - read


def with_ranx(qrels_path: Path, run_paths: list[Path]) -> Timed:
    from ranx import Qrels, Run, evaluate

    start = time.perf_counter()
    qrels = Qrels.from_file(str(qrels_path), kind="trec")
    runs = [Run.from_file(str(p), kind="gz" if p.name.endswith(".gz") else "trec") for p in run_paths]
    read = time.perf_counter()
    out = []
    for run in runs:
        # ranx scores exactly the qrels' queries: make_comparable gives a query missing from the
        # run an empty ranking (0 everywhere) and drops the run's queries that have no judgments
        evaluate(qrels, run, list(RANX.values()), return_mean=False, make_comparable=True)
        out.append({ours: dict(run.scores[name]) for ours, name in RANX.items()})
    return out, read - start, time.perf_counter() - read


RUNNERS: dict[str, Callable[[Path, list[Path]], Timed]] = {
    "rankline": with_rankline, "pytrec_eval": with_pytrec_eval, "ir_measures": with_ir_measures, "ranx": with_ranx,
}


def ranx_ties_broken(qrels_path: Path, run_paths: list[Path]) -> PerQuery:
    """ranx on the same runs with every tie broken beforehand as trec_eval breaks it: each document's
    score replaced by minus its trec_eval rank (score descending, then docid descending, comparing
    scores as trec_eval does). Equal values here mean that a disagreement comes from ties alone."""
    from ranx import Qrels, Run, evaluate

    from rankline.formats import ranked, read_run

    qrels = Qrels.from_file(str(qrels_path), kind="trec")
    out = []
    for path in run_paths:
        run = Run.from_dict({q: {d: -float(i) for i, (d, _) in enumerate(ranked(docs))} for q, docs in read_run(path).items()})
        evaluate(qrels, run, list(RANX.values()), return_mean=False, make_comparable=True)
        out.append({ours: dict(run.scores[name]) for ours, name in RANX.items()})
    return out


def compare(ours: PerQuery, theirs: PerQuery, tolerance: float = 1e-9) -> dict[str, float]:
    """Largest per-query difference over the queries both scored, how many values differ by more
    than `tolerance`, and how many (run, query) pairs only one side scored."""
    worst, differ, values, only_ours, only_theirs = 0.0, 0, 0, 0, 0
    for run_a, run_b in zip(ours, theirs, strict=True):
        for measure, a in run_a.items():
            b = run_b[measure]
            for q, v in a.items():
                if q in b:
                    d = abs(v - b[q])
                    worst, differ, values = max(worst, d), differ + (d > tolerance), values + 1
            if measure == MEASURES[0]:
                only_ours += len(a.keys() - b.keys())
                only_theirs += len(b.keys() - a.keys())
    return {"max_diff": worst, "differ": differ, "values": values, "only_ours": only_ours, "only_theirs": only_theirs}


def write_synthetic(folder: Path, n_queries: int, n_docs: int, seed: int) -> tuple[Path, list[Path]]:
    """A run of n_queries x n_docs random scores (ranked by score, as a system writes it) and 100
    graded judgments per query, half of them on retrieved documents, as TREC files in `folder`."""
    rng = np.random.default_rng(seed)
    qrels_path, run_path = folder / "qrels.txt", folder / "run.trec"
    with open(qrels_path, "w") as qrels_fh, open(run_path, "w") as run_fh:
        for q in range(n_queries):
            docs = rng.choice(10 * n_docs, n_docs, replace=False)
            scores = rng.random(n_docs)
            judged = np.concatenate([docs[:50], rng.choice(10 * n_docs, 50)])
            grades = dict(zip(judged.tolist(), rng.integers(0, 4, len(judged)).tolist()))  # a document once
            order = np.argsort(-scores, kind="stable")
            run_fh.writelines(f"q{q} Q0 d{d} {rank} {s!r} synthetic\n"
                              for rank, (d, s) in enumerate(zip(docs[order].tolist(), scores[order].tolist()), 1))
            qrels_fh.writelines(f"q{q} 0 d{d} {g}\n" for d, g in grades.items())
    return qrels_path, [run_path]


def ranx_cold(qrels_path: Path, run_paths: list[Path], compile_: bool) -> dict[str, float]:
    """ranx's first read + score in a fresh process: with numba compiling (an empty cache folder) or
    loading what numba cached on disk before."""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
        if compile_:
            env["NUMBA_CACHE_DIR"] = cache
        child = subprocess.run([sys.executable, __file__, "--ranx-child", str(qrels_path), *map(str, run_paths)],
                               env=env, capture_output=True, text=True, check=True)
    return json.loads(child.stdout.splitlines()[-1])


def _ranx_child(paths: list[str]) -> None:
    start = time.perf_counter()
    importlib.import_module("ranx")
    imported = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, read, score = with_ranx(Path(paths[0]), [Path(p) for p in paths[1:]])
    print(json.dumps({"import": imported - start, "read": read, "score": score}))


def time_tools(qrels_path: Path, run_paths: list[Path], repeats: int) -> dict[str, dict[str, float]]:
    """Best read, score and read + score seconds of each tool; the tools take turns."""
    best = {tool: {"read": np.inf, "score": np.inf, "total": np.inf} for tool in TOOLS}
    for _ in range(repeats):
        for tool in TOOLS:
            gc.collect()
            _, read, score = RUNNERS[tool](qrels_path, run_paths)
            for phase, t in (("read", read), ("score", score), ("total", read + score)):
                best[tool][phase] = min(best[tool][phase], t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--docs", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cold", action="store_true", help="skip ranx's cold runs in child processes")
    parser.add_argument("--ranx-child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ranx_child:
        return _ranx_child(args.ranx_child)
    warnings.filterwarnings("ignore", category=Warning, module="numba")  # ranx's NumbaTypeSafetyWarning
    import numba

    dl21 = args.data / "trec-dl-2021"
    run_paths = sorted((dl21 / "runs").glob("*.gz"))
    with tempfile.TemporaryDirectory(prefix="eval-speed-") as tmp:
        synthetic = write_synthetic(Path(tmp), args.queries, args.docs, args.seed)
        workloads = {
            f"DL 2021, {len(run_paths)} runs": (dl21 / "qrels-pass.txt", run_paths),
            f"synthetic {args.queries}x{args.docs}": synthetic,
        }
        print(f"measures: {' '.join(MEASURES)}; best of {args.repeats} wall-clock runs per tool, tools taking turns; "
              f"ranx warm, numba threads {numba.get_num_threads()}\n")
        rows, cold = [], {}
        for name, (qrels_path, paths) in workloads.items():
            outputs = {tool: RUNNERS[tool](qrels_path, paths)[0] for tool in TOOLS}  # warm-up and agreement check
            for peer in PEERS:
                c = compare(outputs["rankline"], outputs[peer])
                print(f"{name}: rankline vs {peer}: max |diff| {c['max_diff']:.1e} over {c['values']} per-query values, "
                      f"{c['differ']} differ by > 1e-9; (run, query) pairs only rankline scored: {c['only_ours']}, "
                      f"only {peer} scored: {c['only_theirs']}")
                if peer == "ranx" and c["differ"]:
                    c = compare(outputs["rankline"], ranx_ties_broken(qrels_path, paths))
                    print(f"{name}: rankline vs ranx, ties broken beforehand as trec_eval breaks them: max |diff| "
                          f"{c['max_diff']:.1e}, {c['differ']} differ by > 1e-9 (ranx orders tied scores otherwise)")
            del outputs
            rows.append((name, time_tools(qrels_path, paths, args.repeats)))
            if not args.no_cold:
                cold[name] = {"compiling": ranx_cold(qrels_path, paths, True), "numba cache": ranx_cold(qrels_path, paths, False)}
    header = (f"{'workload':<24} {'phase':<13}" + "".join(f"{t + ' s':>14}" for t in TOOLS)
              + "".join(f"{'vs ' + p:>16}" for p in PEERS))
    print("\n" + header)
    print("-" * len(header))
    for name, best in rows:
        for phase, label in (("read", "read"), ("score", "score"), ("total", "read + score")):
            t = {tool: best[tool][phase] for tool in TOOLS}
            print(f"{name:<24} {label:<13}" + "".join(f"{t[tool]:>14.3f}" for tool in TOOLS)
                  + "".join(f"{t['rankline'] / t[p]:>16.2f}" for p in PEERS))
    print("\nratio = rankline time / peer time (<= 1.0: rankline as fast or faster). read: the qrels and every run file\n"
          "from disk into the tool's own structures (rankline checks every line); score: every run, per query.")
    for name, kinds in cold.items():
        total = {k: v["read"] + v["score"] for k, v in kinds.items()}
        print(f"ranx cold, {name}: first read + score in a fresh process {total['compiling']:.3f} s with numba compiling, "
              f"{total['numba cache']:.3f} s from numba's disk cache (import ranx {kinds['compiling']['import']:.1f} s "
              f"not included); rankline warm / ranx cold: {_best_total(rows, name) / total['compiling']:.2f}, "
              f"{_best_total(rows, name) / total['numba cache']:.2f}")


def _best_total(rows: list[tuple[str, Mapping[str, Mapping[str, float]]]], name: str) -> float:
    return dict(rows)[name]["rankline"]["total"]


if __name__ == "__main__":
    main()
