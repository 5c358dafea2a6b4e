"""Distributed encoding (issue 17): `rankline index --workers N` against one process on the same
corpus, in one run: wall time, documents/s, CPU seconds of every process that encodes, their ratio
(goal: N workers <= 1.15 x one process) and the largest difference between the two indexes'
embeddings (must be <= 1e-6).

    python benchmarks/encode_workers.py                        # first 3000 SciFact abstracts, 2 workers
    python benchmarks/encode_workers.py --docs 5183 --shard-size 500 --workers 2

Both build a dense flat index of the first --docs documents of --corpus (all-MiniLM-L6-v2 unless
--encoder; batches of --batch-size; shards of --shard-size documents, the unit a worker takes) with
`build_index`, the code `rankline index` runs:
- one process: the encoder in this process with --threads torch threads (ONNX Runtime's intra-op
  threads follow them);
- N workers: N Ray actors of 1 CPU and 1 thread each, on the running Ray (RAY_ADDRESS) or a local
  one started before the timing.
CPU seconds are user + system time from getrusage(RUSAGE_SELF): this process's around the build
(its own encoder load, reading the documents, writing shards and the FAISS index; for the workers
run also sending the texts) plus, for the workers run, what each actor reports (`EncodeWorker.cpu_seconds`):
"work" from the start of its encoder load (imports included) to the end, and "process" for its whole
process, Ray's worker start-up included. Ray's own daemons (GCS, raylet) are not counted. Before
either build this process imports the encoder's libraries and loads it once (which also caches its
ONNX export), so the one-process build pays no imports while every worker does: the ratio leans
against the workers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from itertools import islice
from pathlib import Path

import numpy as np

from rankline.retrieval import BuildOptions, build_index
from rankline.retrieval import build as build_module
from rankline.retrieval.corpus import iter_docs
from rankline.retrieval.encode_pool import EncodePool, cpu_seconds
from rankline.retrieval.encoder import DEFAULT_ENCODER, load_encoder
from rankline.retrieval.manifest import Manifest

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = Path(os.environ.get("RANKLINE_SHARED", ROOT.parent / "shared")) / "data" / "beir" / "scifact" / "corpus.jsonl"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=str(SCIFACT), help="corpus file or BEIR folder (default: SciFact's corpus.jsonl)")
    p.add_argument("--docs", type=int, default=3000, help="the first DOCS documents are encoded (default 3000)")
    p.add_argument("--workers", type=int, default=2, help="Ray actors of the distributed build (default 2)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the one-process build (default 2)")
    p.add_argument("--shard-size", type=int, default=250, help="documents per shard (default 250)")
    p.add_argument("--batch-size", type=int, default=64, help="documents per encoder batch (default 64)")
    p.add_argument("--encoder", default=DEFAULT_ENCODER)
    args = p.parse_args(argv)
    for name in ("docs", "workers", "threads", "shard_size", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    if args.workers < 2:
        p.error("--workers must be at least 2 (one worker encodes in this process: that is the peer)")
    return args


def write_first_docs(corpus: str | os.PathLike, count: int, out: Path) -> int:
    """Write the first `count` documents of `corpus` to `out` as a BEIR corpus.jsonl; how many it holds."""
    docs = list(islice(iter_docs(corpus), count))
    out.write_text("".join(json.dumps({"_id": d.docid, "title": d.title, "text": d.text}) + "\n" for d in docs))
    return len(docs)


def embeddings(folder: Path) -> np.ndarray:
    """The index's embeddings in document order, from its verified shard files."""
    manifest = Manifest.read(folder)
    manifest.verify(folder)
    return np.concatenate([np.load(folder / s["file"]) for s in manifest.shards()])


def max_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ValueError(f"the indexes hold {a.shape} and {b.shape} embeddings")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))


def metered_pool(reports: list) -> type[EncodePool]:
    """The pool class `build_index` uses, appending to `reports` what its actors report (CPU seconds)
    when it closes."""

    class MeteredPool(EncodePool):
        def close(self) -> None:
            if self.cpu_seconds:
                reports.append(list(self.cpu_seconds))
            super().close()

    return MeteredPool


def timed_build(corpus: Path, out: Path, options: BuildOptions) -> dict[str, float]:
    """Wall seconds and this process's CPU seconds of one build."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    build_index([corpus], out, options)
    return {"wall": time.perf_counter() - wall, "driver": cpu_seconds() - cpu}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from rankline.pipelines.actors import check_fits, ensure_ray

    with tempfile.TemporaryDirectory(prefix="encode-workers-") as tmp:
        tmp_path = Path(tmp)
        docs = write_first_docs(args.corpus, args.docs, tmp_path / "corpus.jsonl")
        torch.set_num_threads(args.threads)
        load_encoder(args.encoder)  # imports and the cached ONNX export, outside both timings
        options = BuildOptions(dense=True, bm25=False, encoder=args.encoder, shard_size=args.shard_size,
                               batch_size=args.batch_size, progress=False)
        started = ensure_ray()
        try:
            check_fits([{"CPU": 1}] * args.workers)
            one = timed_build(tmp_path / "corpus.jsonl", tmp_path / "one", options)
            build_module.EncodePool = metered_pool(reports := [])
            try:
                many = timed_build(tmp_path / "corpus.jsonl", tmp_path / "many", replace(options, workers=args.workers))
            finally:
                build_module.EncodePool = EncodePool
        finally:
            if started:
                import ray

                ray.shutdown()
        (reports,) = reports
        diff = max_abs_difference(embeddings(tmp_path / "one"), embeddings(tmp_path / "many"))

    work = sum(w for w, _ in reports)
    process = sum(p for _, p in reports)
    shards = -(-docs // args.shard_size)
    print(f"# {docs} documents of {args.corpus}, {args.encoder}, batches of {args.batch_size}, {shards} shards of "
          f"{args.shard_size}; load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'build':<32}{'wall s':>8}{'docs/s':>8}{'CPU s driver':>14}{'CPU s workers':>15}{'CPU s total':>13}{'CPU ratio':>11}")
    print(f"{f'1 process, {args.threads} threads':<32}{one['wall']:>8.1f}{docs / one['wall']:>8.1f}{one['driver']:>14.1f}"
          f"{'-':>15}{one['driver']:>13.1f}{1.0:>11.2f}")
    for label, workers in (("work", work), ("process", process)):
        total = many["driver"] + workers
        name = f"{args.workers} workers x 1 thread ({label})"
        print(f"{name:<32}{many['wall']:>8.1f}{docs / many['wall']:>8.1f}{many['driver']:>14.1f}{workers:>15.1f}"
              f"{total:>13.1f}{total / one['driver']:>11.2f}")
    print(f"# workers' CPU s each (work, process): {', '.join(f'({w:.1f}, {p:.1f})' for w, p in reports)}")
    print(f"# max |embedding difference| {diff:.2e} ({'<=' if diff <= 1e-6 else 'ABOVE'} 1e-6); "
          f"CPU ratio goal <= 1.15 (work: {(many['driver'] + work) / one['driver']:.2f})")
    return 0 if diff <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
