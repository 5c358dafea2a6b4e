"""Sharded dense search at scale (issue 17), on synthetic vectors: flat (exact) and IVF-PQ indexes split
into 1, 2, 4, ... shards, each against its unsharded FAISS index measured in the same run, and from
the measured per-shard costs a plan for MS MARCO passages (8.8M) and for 100M passages.

    python benchmarks/scale.py                       # 200,000 x 384, shards 1 2 4, in-process and on Ray
    nice -n 5 python benchmarks/scale.py --n 1000000 # the issue's size (1.5 GB of vectors, 3 GB on disk)
    python benchmarks/scale.py --no-ray --threads 2 --nlist 1024 --m 32 --nprobe 16 64

The vectors are synthetic unit vectors (below), written once as a verified flat index folder and once as an
IVF-PQ index folder (`write_vector_index`: the embedding files and manifest `rankline index` writes;
the IVF-PQ quantizers are trained once on --train-size rows, then every row is added). For each index
kind and shard count S:
- build s: opening the S shards from the folder (reading and checksumming what each reads; a flat
  shard builds its FAISS index from its embedding files, an IVF-PQ shard keeps its rows' codes);
- queries/s and p50/p99 latency of one search call of --batch queries for the top --k, in-process
  (shards searched one after another, FAISS using --threads threads) and, unless --no-ray, with each
  shard in its own Ray actor (the --threads CPUs shared: each actor gets threads/S of them);
- memory/shard: the bytes a shard holds (flat: its vectors; IVF-PQ: its codes and ids plus the shared
  quantizers);
- exact: the fraction of queries whose top k (doc ids and float32 scores) equals the first shard
  count's (which must be 1.0), and the fraction equal to the unsharded FAISS search's (flat: doc ids,
  below 1.0 only where FAISS's own float32 rounding reorders near-ties; IVF-PQ: doc ids and scores);
- ratio: queries/s against the unsharded FAISS index (goal for 4 shards: >= 0.7), its passes taken in
  turns with the configuration's, the fastest pass of each side kept (--repeat; the machine is shared).
The unsharded rows, printed last in each table, are FAISS's fastest passes over the whole run; the
IVF-PQ table also gives recall@k of the unsharded IVF-PQ index against the exact (flat) top k at each
--nprobe (the first --nprobe is the one timed).

The vectors lie near a 32-dimensional subspace plus noise (`synthetic`), so recall means something;
it is not a prediction for real embeddings.

The plan (`plan`) takes the measured bytes per row and row-queries per core-second (queries/s x rows
/ threads, at the largest shard count, in-process) and the assumed node size, target
throughput and encoder speed (options, defaults stated in --help), and prints its arithmetic.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MS_MARCO_PASSAGES = 8_841_823


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000, help="vectors in the index (default 200000)")
    p.add_argument("--dim", type=int, default=384, help="dimensions (default 384, all-MiniLM-L6-v2's)")
    p.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4], help="shard counts (default 1 2 4)")
    p.add_argument("--queries", type=int, default=256, help="queries measured per configuration (default 256)")
    p.add_argument("--batch", type=int, default=32, help="queries per search call (default 32)")
    p.add_argument("--k", type=int, default=10, help="hits per query (default 10)")
    p.add_argument("--repeat", type=int, default=3, help="passes per configuration, the fastest kept (default 3)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads in all (default: all cores)")
    p.add_argument("--no-ray", dest="ray", action="store_false", help="skip the Ray actor runs")
    p.add_argument("--kinds", nargs="+", choices=["flat", "ivfpq"], default=["flat", "ivfpq"],
                   help="index kinds to measure (default both; without flat, recall is against FAISS's flat search)")
    p.add_argument("--nlist", type=int, default=1024, help="IVF-PQ inverted lists (default 1024)")
    p.add_argument("--m", type=int, default=32, help="IVF-PQ sub-quantizers of 8 bits, a divisor of --dim (default 32)")
    p.add_argument("--nprobe", type=int, nargs="+", default=[16, 64], help="lists probed; the first is timed (default 16 64)")
    p.add_argument("--train-size", type=int, default=50_000, help="rows the IVF-PQ quantizers are trained on (default 50000)")
    p.add_argument("--dir", help="folder for the synthetic indexes (default: a temporary folder, removed after)")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("plan (assumed figures)")
    g.add_argument("--target-qps", type=float, default=1000.0, help="queries/s the deployment must serve (default 1000)")
    g.add_argument("--node-memory-gib", type=float, default=32.0, help="memory a node gives its shards, GiB (default 32)")
    g.add_argument("--node-cores", type=int, default=16, help="CPU cores a node gives its shards (default 16)")
    g.add_argument("--gpu-docs-per-s", type=float, default=14_200.0,
                   help="passages one GPU encodes per second (default 14200: sbert.net's figure for all-MiniLM-L6-v2 on a "
                        "V100, measured on short sentences; MS MARCO passages are longer, so this is optimistic)")
    g.add_argument("--gpus", type=int, nargs="+", default=[1, 8, 64], help="GPU counts to give encoding times for (default 1 8 64)")
    g.add_argument("--corpora", type=int, nargs="+", default=[MS_MARCO_PASSAGES, 100_000_000],
                   help="corpus sizes to plan (default: MS MARCO's 8841823 passages and 100M)")
    args = p.parse_args(argv)
    for name in ("n", "dim", "queries", "batch", "k", "threads", "repeat", "nlist", "m", "train_size", "node_cores"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    if any(s < 1 or s > args.n for s in args.shards):
        p.error(f"--shards must lie in 1..{args.n}")
    if args.dim % args.m:
        p.error(f"--m must divide --dim ({args.dim})")
    if args.train_size < 39 * args.nlist or args.train_size > args.n:
        p.error(f"--train-size must lie in {39 * args.nlist}..{args.n} (FAISS wants 39 rows per list to train)")
    if any(x < 1 for x in args.nprobe + args.gpus + args.corpora) or min(args.target_qps, args.node_memory_gib, args.gpu_docs_per_s) <= 0:
        p.error("--nprobe, --gpus, --corpora, --target-qps, --node-memory-gib and --gpu-docs-per-s must be positive")
    return args


def synthetic(n: int, dim: int, seed: int, latent: int = 32, noise: float = 0.3, chunk: int = 100_000) -> np.ndarray:
    """`n` unit vectors of `dim` dimensions that lie near a `latent`-dimensional subspace (a fixed random
    basis; Gaussian coordinates, plus isotropic Gaussian noise of `noise` times the signal's scale),
    so that, like sentence embeddings and unlike i.i.d. Gaussian vectors, they have neighbours that an
    IVF-PQ index can find. The subspace is the same for every `seed`."""
    basis = np.random.default_rng(12345).standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for lo in range(0, n, chunk):
        rows = min(chunk, n - lo)
        block = rng.standard_normal((rows, latent), dtype=np.float32) @ basis
        block += noise * rng.standard_normal((rows, dim), dtype=np.float32) / np.sqrt(dim)
        out[lo : lo + rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def one_pass(search, queries: np.ndarray, batch: int) -> tuple[list, float, list[float]]:
    """(results, total seconds, per-call latencies) of `search` over `queries` in calls of `batch`."""
    results, latencies = [], []
    start = time.perf_counter()
    for lo in range(0, len(queries), batch):
        t = time.perf_counter()
        results += search(queries[lo : lo + batch])
        latencies.append(time.perf_counter() - t)
    return results, time.perf_counter() - start, latencies


class Measured:
    """The fastest pass of each side, the sides taken in turns (others share this machine: the
    fastest pass is the least disturbed, and turns expose both sides to the same load)."""

    def __init__(self, queries: np.ndarray, batch: int, repeat: int):
        self.queries, self.batch, self.repeat = queries, batch, repeat
        self.base: tuple | None = None  # the unsharded FAISS search's fastest pass so far

    def pair(self, base, search) -> tuple[tuple, tuple]:
        """(fastest pass of `search`, fastest pass of `base` taken in turns with it)."""
        search(self.queries[: self.batch])  # warm-up (page faults, thread pools, actor code)
        best_base = best = None
        for _ in range(self.repeat):
            for side in ("base", "search"):
                out = one_pass(base if side == "base" else search, self.queries, self.batch)
                if side == "base" and (best_base is None or out[1] < best_base[1]):
                    best_base = out
                if side == "search" and (best is None or out[1] < best[1]):
                    best = out
        if self.base is None or best_base[1] < self.base[1]:
            self.base = best_base
        return best, best_base


HEADER = (f"{'configuration':<28}{'build s':>8}{'queries/s':>11}{'p50 ms':>10}{'p99 ms':>10}  {'memory/shard':<16}"
          f"{'exact: =first, =faiss':<24}ratio")


def row(label: str, build: float | None, n_queries: int, total: float, lat: list[float], mem: str, exact: str, ratio: str) -> str:
    p50, p99 = np.percentile(lat, 50) * 1e3, np.percentile(lat, 99) * 1e3
    b = f"{build:8.2f}" if build is not None else f"{'':8}"
    return f"{label:<28}{b}{n_queries / total:11.1f}{p50:10.1f}{p99:10.1f}  {mem:<16}{exact:<24}{ratio}"


def mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def same_fraction(res: list, other: list, *, scores: bool = True) -> float:
    """Fraction of queries whose (doc ids, scores) in `res` equal `other`'s (only the ids when not `scores`)."""
    return float(np.mean([a[0] == b[0] and (not scores or np.array_equal(a[1], b[1])) for a, b in zip(res, other)]))


def recall(res: list, exact: list) -> float:
    """Mean fraction of each query's exact top k found in its top k."""
    return float(np.mean([len(set(a[0]) & set(b[0])) / len(b[0]) for a, b in zip(res, exact)]))


@dataclass
class Cost:
    """What one index kind costs, measured at its largest shard count in-process: bytes a shard holds per
    row, and (query, row) pairs one core searches per second (queries/s x rows searched per query, all
    shards / threads), merging included."""
    kind: str
    bytes_per_row: float
    row_queries_per_core_s: float


def main(argv=None) -> int:
    import faiss

    args = parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="rankline-scale-"))
    try:
        t = time.perf_counter()
        vectors = synthetic(args.n, args.dim, args.seed)
        queries = synthetic(args.queries, args.dim, args.seed + 1)
        docids = [f"doc{i:09d}" for i in range(args.n)]
        print(f"# {args.n} x {args.dim} unit vectors ({time.perf_counter() - t:.1f} s), {args.queries} queries in calls of "
              f"{args.batch}, top {args.k}, {args.threads} threads, fastest of {args.repeat} passes, faiss {faiss.__version__}; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
        flat_folder, ivf_folder, ivf, ivf_times = write_folders(root, vectors, docids, args)
        flat, flat_build = timed(lambda: faiss_flat(vectors))
        vectors = None
        costs = []
        if "flat" in args.kinds:
            print(f"\n## flat (exact)\n{HEADER}", flush=True)
            exact, cost = flat_table(flat, flat_build, flat_folder, queries, docids, args)
            costs.append(cost)
        else:  # FAISS's flat search: the exact top k but where its float32 rounding reorders near-ties
            exact = [([docids[i] for i in ids], s) for s, ids in zip(*flat.search(queries, args.k))]
        flat = None
        if "ivfpq" in args.kinds:
            print(f"\n## IVF-PQ IVF{args.nlist},PQ{args.m}x8, nprobe {args.nprobe[0]} (trained on {args.train_size} rows in "
                  f"{ivf_times[0]:.1f} s, {args.n} rows added in {ivf_times[1]:.1f} s)\n{HEADER}", flush=True)
            costs.append(ivf_table(ivf, sum(ivf_times), ivf_folder, queries, docids, exact, args))
        print(f"# load average at the end {os.getloadavg()[0]:.1f}")
        print_plans(costs, args)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def timed(make):
    t = time.perf_counter()
    out = make()
    return out, time.perf_counter() - t


def faiss_flat(vectors: np.ndarray):
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def write_folders(root: Path, vectors: np.ndarray, docids: list[str], args) -> tuple[Path, Path, object, tuple[float, float]]:
    """The flat and IVF-PQ index folders (written unless --dir holds them), and the unsharded IVF-PQ
    index with its (training, adding) seconds."""
    import faiss

    from rankline.retrieval.sharding import write_vector_index

    flat_folder = root / f"flat-{args.n}x{args.dim}"
    ivf_folder = root / f"ivfpq-{args.n}x{args.dim}-IVF{args.nlist},PQ{args.m}"
    if "flat" in args.kinds and not (flat_folder / "manifest.json").exists():
        write_vector_index(flat_folder, vectors, docids, shard_size=65536)
    if "ivfpq" not in args.kinds:
        return flat_folder, ivf_folder, None, (0.0, 0.0)
    # np: no polysemous training (a slow reordering of the PQ codes that only Hamming filtering uses)
    ivf = faiss.index_factory(args.dim, f"IVF{args.nlist},PQ{args.m}x8np", faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(args.seed + 2).choice(args.n, args.train_size, replace=False)
    _, train_s = timed(lambda: ivf.train(vectors[np.sort(sample)]))
    _, add_s = timed(lambda: ivf.add(vectors))
    if not (ivf_folder / "manifest.json").exists():
        write_vector_index(ivf_folder, vectors, docids, shard_size=65536, index=faiss.clone_index(ivf))
    return flat_folder, ivf_folder, ivf, (train_s, add_s)


def shard_rows(kind: str, index, folder: Path, queries: np.ndarray, docids: list[str], args, *, nprobe: int | None = None,
               peer_scores: bool = True) -> tuple[list, Cost, "Measured"]:
    """The rows of one index kind: 1, 2, 4, ... shards in-process and on Ray, each against `index`, the
    unsharded FAISS index, measured in turns with it. Returns the 1-shard result (what every shard count
    must equal), the kind's cost and the peer's measurements. `peer_scores`: whether scores must equal
    the peer's too (not for flat, where FAISS's float32 sums may reorder near-ties)."""
    from rankline.retrieval.sharding import IVFProbes, LocalShards, ShardedDenseRetriever, load_shard, shard_ranges

    base = lambda q: [([docids[i] for i in ids], s) for s, ids in zip(*index.search(q, args.k))]  # noqa: E731
    faiss_res = one_pass(base, queries, args.batch)[0]
    measured = Measured(queries, args.batch, args.repeat)
    reference = cost = None

    def exactness(res: list) -> str:
        return f"{same_fraction(res, reference):.3f} / {same_fraction(res, faiss_res, scores=peer_scores):.3f}"

    for shards in args.shards:
        ranges = shard_ranges(args.n, shards)
        t = time.perf_counter()
        backend = LocalShards([load_shard(folder, lo, hi) for lo, hi in ranges])
        local = ShardedDenseRetriever(backend, probes=IVFProbes(backend.centroids(), nprobe) if nprobe is not None else None)
        build = time.perf_counter() - t
        info = local.info()
        (res, total, lat), (_, base_total, _) = measured.pair(base, lambda q: local.search_vectors(q, args.k))
        reference = reference or res
        print(row(f"{kind} {shards} shard(s), in-process", build, args.queries, total, lat, mib(max(s["bytes"] for s in info)),
                  exactness(res), f"{base_total / total:.2f}"), flush=True)
        cost = Cost(kind, max(s["bytes"] / s["rows"] for s in info), args.queries / total * args.n / args.threads)
        local.close()
        if args.ray:
            print(ray_row(kind, folder, ranges, measured, base, args, exactness, nprobe=nprobe), flush=True)
    return reference, cost, measured


def flat_table(flat, flat_build: float, folder: Path, queries: np.ndarray, docids: list[str], args) -> tuple[list, Cost]:
    """The flat rows; returns the exact top k of every query and the flat cost."""
    reference, cost, measured = shard_rows("flat", flat, folder, queries, docids, args, peer_scores=False)
    _, total, lat = measured.base
    print(row("faiss flat, unsharded", flat_build, args.queries, total, lat, mib(flat.ntotal * flat.d * 4), "(the peer)", "1.00"))
    return reference, cost


def ivf_table(ivf, ivf_build: float, folder: Path, queries: np.ndarray, docids: list[str], exact: list, args) -> Cost:
    """The IVF-PQ rows at the first --nprobe, then recall@k of the unsharded index at each --nprobe."""
    import faiss

    ivf.nprobe = args.nprobe[0]
    _, cost, measured = shard_rows("ivfpq", ivf, folder, queries, docids, args, nprobe=args.nprobe[0])
    _, total, lat = measured.base
    print(row("faiss ivfpq, unsharded", ivf_build, args.queries, total, lat, mib(faiss.serialize_index(ivf).nbytes), "(the peer)", "1.00"))
    base = lambda q: [([docids[i] for i in ids], s) for s, ids in zip(*ivf.search(q, args.k))]  # noqa: E731
    for p in args.nprobe:
        ivf.nprobe = p
        print(f"# recall@{args.k} of IVF-PQ (unsharded; the shards return the same) against exact flat, nprobe {p}: "
              f"{recall(one_pass(base, queries, args.batch)[0], exact):.3f}")
    return cost


def ray_row(kind: str, folder: Path, ranges, measured: Measured, base, args, exactness, nprobe: int | None = None) -> str:
    import ray

    from rankline.pipelines.actors import ensure_ray
    from rankline.retrieval.sharding import IVFProbes, RayShards, ShardedDenseRetriever

    shards = len(ranges)
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ensure_ray()
    # the --threads CPUs shared by the shard actors (Ray sets each actor's OMP_NUM_THREADS from its num_cpus)
    t = time.perf_counter()
    backend = RayShards(str(folder), ranges, num_cpus=args.threads / shards)
    probes = IVFProbes(backend.centroids(), nprobe) if nprobe is not None else None
    build = time.perf_counter() - t
    try:
        retriever = ShardedDenseRetriever(backend, probes=probes)
        (res, total, lat), (_, base_total, _) = measured.pair(base, lambda q: retriever.search_vectors(q, args.k))
        mem = mib(max(s["bytes"] for s in backend.info()))
        return row(f"{kind} {shards} shard(s), Ray actors", build, args.queries, total, lat, mem, exactness(res), f"{base_total / total:.2f}")
    finally:
        backend.close()


# -- the plan ------------------------------------------------------------------------------------------

def plan(docs: int, bytes_per_row: float, row_queries_per_core_s: float, *, target_qps: float, node_bytes: float,
         node_cores: int) -> dict:
    """Nodes for `docs` rows searched at `target_qps`, each query scattered to every node (one shard per
    node): a node may hold at most node_bytes / bytes_per_row rows (memory) and at most
    row_queries_per_core_s * node_cores / target_qps rows (speed: search cost grows with the rows);
    nodes = ceil(docs / the smaller), rows spread evenly; each node then serves
    row_queries_per_core_s * node_cores / its rows queries/s."""
    rows_by_memory = node_bytes / bytes_per_row
    rows_by_speed = row_queries_per_core_s * node_cores / target_qps
    nodes = math.ceil(docs / min(rows_by_memory, rows_by_speed))
    rows_per_node = math.ceil(docs / nodes)
    return {"rows_by_memory": rows_by_memory, "rows_by_speed": rows_by_speed, "nodes": nodes, "rows_per_node": rows_per_node,
            "bytes_per_node": rows_per_node * bytes_per_row, "qps": row_queries_per_core_s * node_cores / rows_per_node}


def encode_hours(docs: int, gpu_docs_per_s: float, gpus: int) -> float:
    """Hours to encode `docs` passages on `gpus` GPUs that each encode gpu_docs_per_s a second."""
    return docs / (gpu_docs_per_s * gpus) / 3600


def print_plans(costs: list[Cost], args) -> None:
    node_bytes = args.node_memory_gib * 2**30
    print(f"\n## plan: each query goes to every node (one shard per node), {args.target_qps:g} queries/s in all\n"
          f"# measured here (largest shard count, in-process): " + "; ".join(
              f"{c.kind} {c.bytes_per_row:.1f} bytes/row, {c.row_queries_per_core_s:.3g} row-queries per core-second" for c in costs))
    print(f"# assumed (options): a node gives its shard {args.node_memory_gib:g} GiB and {args.node_cores} cores, search "
          f"throughput grows with cores and falls with rows in proportion (IVF-PQ: at the same nprobe/nlist); an encoder GPU "
          f"does {args.gpu_docs_per_s:g} passages/s")
    for docs in args.corpora:
        for c in costs:
            p = plan(docs, c.bytes_per_row, c.row_queries_per_core_s, target_qps=args.target_qps, node_bytes=node_bytes,
                     node_cores=args.node_cores)
            print(f"{docs:,} passages, {c.kind}: memory {docs:,} x {c.bytes_per_row:.1f} B = {docs * c.bytes_per_row / 2**30:.1f} GiB; "
                  f"rows/node <= {node_bytes:.4g} B / {c.bytes_per_row:.1f} B = {p['rows_by_memory']:,.0f} (memory) and "
                  f"<= {c.row_queries_per_core_s:.4g} x {args.node_cores} / {args.target_qps:g} = {p['rows_by_speed']:,.0f} (speed) "
                  f"-> nodes = ceil({docs:,} / {min(p['rows_by_memory'], p['rows_by_speed']):,.0f}) = {p['nodes']}, "
                  f"{p['rows_per_node']:,} rows = {p['bytes_per_node'] / 2**30:.2f} GiB and {p['qps']:,.0f} queries/s per node")
        hours = ", ".join(f"{g} GPU(s) {encode_hours(docs, args.gpu_docs_per_s, g):.2f} h" for g in args.gpus)
        print(f"{docs:,} passages, encoding: {docs:,} / ({args.gpu_docs_per_s:g} passages/s x GPUs) = {hours}")


if __name__ == "__main__":
    sys.exit(main())
