"""Coverage and width of confidence intervals from LLM labels (Oosterhuis et al., KDD 2024, setting).

For every run and LLM label set, and n labelled queries drawn at random (500 splits per n), each
method gets the human labels of the n labelled queries and the LLM labels of all queries; its interval
is checked against the true value, the metric with the human (NIST) labels over the method's
estimand (all queries for human/bootstrap/ppi-all/crc/llm-only, the unlabelled ones for ppi/ppi++).

Methods: ``human`` (t interval, human labels only), ``bootstrap`` (the paper's basic bootstrap,
human only), ``llm-only`` (t interval over the LLM values of all queries: no human label at all),
``ppi``, ``ppi++``, ``ppi-all`` (rankline.evaluation.intervals), ``crc`` (dataset-level conformal
risk control on the unlabelled queries, DCG measures only, restated for all queries as `rankline eval
--ci crc` reports it: same coverage, width times m/N) and ``crc-query`` (per-query CRC: share of unlabelled queries whose
own DCG is enclosed, mean per-query width; refused below 19 labelled queries at 95%). Label set
``all-files`` averages the metric over every LLM label file and gives CRC the empirical label
distribution of the files; a single file gives CRC its one-hot labels smoothed by a pseudo-count.

    .venv/bin/python benchmarks/ci_coverage.py [--qrels Q] [--runs RUN ...] [--llm-labels FILE ...]
        [--measures DCG@10 nDCG@10] [--n 5 10 20 30] [--splits 500] [--out-dir out/ci_coverage]

prints a table (coverage / mean width per n, averaged over runs and splits) and writes
``ci_coverage.md``, ``ci_coverage.json`` and ``ci_coverage.png`` to --out-dir.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rankline.evaluation import crc, intervals
from rankline.evaluation.ci import QueryValues
from rankline.formats import atomic_write, read_qrels, read_run
from rankline.evaluation.label_dist import empirical_label_dist

SHARED = Path(os.environ.get("RANKLINE_SHARED", Path(__file__).resolve().parents[1].parent / "shared")) / "data"
DL19 = SHARED / "trec-dl-2019"
ENSEMBLE = "all-files"
HUMAN_ONLY = ("human", "bootstrap")
WITH_LLM = ("llm-only", "ppi", "ppi++", "ppi-all", "crc", "crc-query")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qrels", type=Path, default=DL19 / "qrels.dl19-passage.txt", help="human (NIST) qrels")
    p.add_argument("--runs", type=Path, nargs="+",
                   default=sorted((DL19 / "runs").iterdir()) + sorted((DL19 / "candidates").glob("*.trec")))
    p.add_argument("--llm-labels", type=Path, nargs="+", default=sorted((SHARED / "llm-labels" / "dl2019").glob("*.txt")))
    p.add_argument("--measures", nargs="+", default=["DCG@10", "nDCG@10"])
    p.add_argument("--n", type=int, nargs="+", default=[5, 10, 20, 30], help="numbers of labelled queries")
    p.add_argument("--splits", type=int, default=500, help="random labelled/unlabelled splits per n")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--resamples", type=int, default=intervals.BOOTSTRAP_RESAMPLES, help="resamples of the bootstrap method")
    p.add_argument("--crc-resamples", type=int, default=2000,
                   help="bootstrap resamples of dataset-level CRC's calibration (the library default is 10,000; "
                        "2,000 still leaves 50 in each 2.5%% tail and keeps 2,000 splits x 48 columns to minutes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=Path("out/ci_coverage"))
    return p.parse_args(argv)


def load(args: argparse.Namespace):
    human = read_qrels(args.qrels)
    label_sets = {path.name.removesuffix(".txt"): read_qrels(path) for path in args.llm_labels}
    runs = {path.name.removesuffix(".gz"): read_run(path) for path in args.runs}
    with_llm = set().union(*({q for q, docs in labels.items() if docs} for labels in label_sets.values()))
    qids = sorted(q for q in human if human[q] and q in with_llm)
    if len(qids) <= max(args.n):
        raise ValueError(f"only {len(qids)} queries have human and LLM labels; cannot label {max(args.n)} and keep the rest")
    grades = 1 + max(int(g) for labels in [human, *label_sets.values()] for docs in labels.values() for g in docs.values())
    return human, label_sets, runs, qids, grades


def per_query_arrays(measure, human, label_sets, runs, qids, grades):
    """Y (Q, R) human values; F (Q, R, S) LLM values; grid (Q, R, S, G) CRC bounds or None (non-DCG)."""
    sets = [[labels] for labels in label_sets.values()] + [list(label_sets.values())]
    human_values = QueryValues([human], [measure], qids)
    llm_values = [QueryValues(s, [measure], qids) for s in sets]
    y = np.stack([human_values(run)[:, 0] for run in runs.values()], axis=1)
    f = np.stack([np.stack([values(run)[:, 0] for values in llm_values], axis=1) for run in runs.values()], axis=1)
    if not measure.startswith("DCG"):
        return y, f, None
    dists = [empirical_label_dist(s, grades=grades) for s in sets]
    grid = np.stack([np.stack([crc.dcg_grid(run, d, qids, measure) for d in dists], axis=1) for run in runs.values()], axis=1)
    return y, f, grid


def simulate(y, f, grid, n, args, rng):
    """{method: (coverage, width)} arrays of shape (splits, R) or (splits, R, S)."""
    q, r, s = f.shape
    cover: dict[str, list] = {}
    width: dict[str, list] = {}

    def record(name, lower, upper, truth):
        cover.setdefault(name, []).append((lower <= truth) & (truth <= upper))
        width.setdefault(name, []).append(upper - lower)

    llm_only = intervals.human_t(f, args.alpha)  # no randomness: the same "interval" on every split
    crc_per_query_ok = n >= crc.min_labelled_per_query(args.alpha)
    for split in tqdm(range(args.splits), desc=f"n={n}", unit="split", leave=False, disable=None):
        perm = rng.permutation(q)
        lab, unl = perm[:n], perm[n:]
        truth_all, truth_unl = y.mean(axis=0), y[unl].mean(axis=0)
        y_lab = y[lab]
        y_cols = np.broadcast_to(y_lab[:, :, None], (n, r, s))
        for name, iv in (("human", intervals.human_t(y_lab, args.alpha)),
                         ("bootstrap", intervals.bootstrap_basic(y_lab, args.alpha, resamples=args.resamples, rng=rng))):
            record(name, iv.lower, iv.upper, truth_all)
        record("llm-only", llm_only.lower, llm_only.upper, truth_all[:, None])
        record("ppi", *_bounds(intervals.ppi_mean(y_cols, f[lab], f[unl], args.alpha)), truth_unl[:, None])
        record("ppi++", *_bounds(intervals.ppi_mean(y_cols, f[lab], f[unl], args.alpha, lam=None, rng=rng)), truth_unl[:, None])
        record("ppi-all", *_bounds(intervals.ppi_all(y_cols, f[lab], f[unl], args.alpha)), truth_all[:, None])
        if grid is None:
            continue
        iv = crc.crc_dataset(y_cols, grid[lab], grid[unl], args.alpha, resamples=args.crc_resamples, rng=rng)
        record("crc", *_bounds(intervals.to_all_queries(iv, y_cols)), truth_all[:, None])
        if crc_per_query_ok:
            lower, upper = crc.crc_per_query(y_cols, grid[lab], grid[unl], args.alpha)
            y_unl = y[unl][:, :, None]
            cover.setdefault("crc-query", []).append(((lower <= y_unl) & (y_unl <= upper)).mean(axis=0))
            width.setdefault("crc-query", []).append((upper - lower).mean(axis=0))
    return {m: (np.asarray(cover[m], dtype=np.float64), np.asarray(width[m])) for m in cover}


def _bounds(iv: intervals.Interval):
    return iv.lower, iv.upper


def summarise(results, set_names):
    """Rows (measure, label set, method) -> {n: (coverage, width, min coverage over runs)}."""
    rows: dict[tuple[str, str, str], dict[int, tuple[float, float, float]]] = {}
    for (measure, n), per_method in results.items():
        for method, (cov, wid) in per_method.items():
            if cov.ndim == 2:  # human-only: no label set
                rows.setdefault((measure, "-", method), {})[n] = (cov.mean(), wid.mean(), cov.mean(axis=0).min())
                continue
            for j, name in enumerate(set_names):
                c, w = cov[:, :, j], wid[:, :, j]
                rows.setdefault((measure, name, method), {})[n] = (c.mean(), w.mean(), c.mean(axis=0).min())
    return rows


def table(rows, ns) -> str:
    order = {m: i for i, m in enumerate(HUMAN_ONLY + WITH_LLM)}
    keys = sorted(rows, key=lambda k: (k[0], k[1] != "-", k[1], order[k[2]]))
    header = ["measure", "label set", "method", *(f"n={n} cov (min) / width" for n in ns)]
    body = []
    for key in keys:
        cells = [f"{rows[key][n][0]:.3f} ({rows[key][n][2]:.2f}) / {rows[key][n][1]:.3f}" if n in rows[key] else "refused"
                 for n in ns]
        body.append([*key, *cells])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, body)]) + "\n"


def plot(rows, ns, measures, path: Path, alpha: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = HUMAN_ONLY + WITH_LLM
    colours = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(len(measures), 2, figsize=(11, 3.6 * len(measures)), squeeze=False)
    for i, measure in enumerate(measures):
        for method in methods:
            key = next(((measure, s, method) for s in ("-", ENSEMBLE) if (measure, s, method) in rows), None)
            if key is None:
                continue
            by_n = rows[key]
            xs = [n for n in ns if n in by_n]
            style = dict(ls="--" if key[1] == "-" else "-", marker="o", color=colours[method], label=method)
            axes[i, 0].plot(xs, [by_n[n][0] for n in xs], **style)
            if method != "crc-query":  # a per-query width is not comparable with the others
                axes[i, 1].plot(xs, [by_n[n][1] for n in xs], **style)
        axes[i, 0].axhline(1 - alpha, color="grey", lw=0.8)
        axes[i, 0].set(title=f"{measure}: coverage ({ENSEMBLE} labels; dashed: human only)",
                       xlabel="labelled queries", ylim=(0, 1.02))
        axes[i, 1].set(title=f"{measure}: mean width of the interval of the mean", xlabel="labelled queries", yscale="log")
        axes[i, 0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # per-query CRC below 39 labelled queries warns that it guarantees less than 95%: the table measures it
    warnings.filterwarnings("ignore", message="per-query CRC with")
    start = time.perf_counter()
    human, label_sets, runs, qids, grades = load(args)
    set_names = [*label_sets, ENSEMBLE]
    rng = np.random.default_rng(args.seed)
    results = {}
    for measure in args.measures:
        y, f, grid = per_query_arrays(measure, human, label_sets, runs, qids, grades)
        for n in args.n:
            results[measure, n] = simulate(y, f, grid, n, args, rng)
    rows = summarise(results, set_names)
    text = (f"{len(runs)} runs, {len(label_sets)} LLM label sets (+ {ENSEMBLE}), {len(qids)} queries, "
            f"{args.splits} splits per n, nominal coverage {1 - args.alpha:.2f}; cells: mean coverage "
            f"(lowest run's coverage) / mean width, averaged over runs and splits\n\n" + table(rows, args.n))
    sys.stdout.write(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out_dir / "ci_coverage.md") as fh:
        fh.write(text)
    with atomic_write(args.out_dir / "ci_coverage.json") as fh:
        json.dump([{"measure": k[0], "label_set": k[1], "method": k[2],
                    **{f"n={n}": {"coverage": v[0], "width": v[1], "min_run_coverage": v[2]} for n, v in by_n.items()}}
                   for k, by_n in rows.items()], fh, indent=1)
    plot(rows, args.n, args.measures, args.out_dir / "ci_coverage.png", args.alpha)
    print(f"\nwrote {args.out_dir}/ci_coverage.{{md,json,png}} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
