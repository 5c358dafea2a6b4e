"""Dense encoding of an index's shards, in this process or over a pool of Ray actors
(`BuildOptions(workers=N, gpus_per_worker=G)`, `rankline index ... --workers N [--gpus-per-worker G]`).

Both ways encode a shard with `encode_shard`, the one encoding path: the encoder's length-sorted batches
of the shard's `batch_size`, so a shard's embeddings do not depend on where it was encoded. Both yield
each shard as it is done; the driver (`rankline.retrieval.build`) writes its file atomically and records
its sha256 in .build/state.json at once, so an interrupted build resumes from its finished shards
whichever way it ran.

Why actors and not Ray Data: the unit of work, of resume and of retry is the dense shard (`shard_size`
documents, one file, one checksum). An actor pool maps one job to one shard: each actor loads the
encoder once, encodes whole shards with exactly the single-process batching, and the driver knows which
shard every actor holds, so a dead actor costs only its unfinished shard. Ray Data cuts its input into
blocks and batches of its own choosing, streams and retries at that level, and would have to be
regrouped into shards (and its batching made to match) to give the same files and the same resume.

Why the driver sends each shard's texts instead of each actor reading the document store: the store
(.build/docs.sqlite) is a file on the driver's disk, which actors on other nodes cannot open; the
texts of a shard are small next to the work of encoding them (8192 abstracts are about 10 MB against
minutes of encoder time) and are read once, in order, by one process. Jobs are sent one per idle actor,
so only the shards being encoded are held in Ray's object store.

A crashed actor is restarted by Ray (`max_restarts`), which re-runs the shard it held on the restarted
actor (`max_task_retries`); an actor out of restarts is dropped and its shard goes to another one.
Finished shards are never encoded again; when every actor is gone the build stops, and running the
same command again resumes it.
"""
from __future__ import annotations

import os
import resource
import warnings
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from rankline.retrieval.encoder import Encoder, load_encoder, resolve_encoder

ShardJob = tuple[int, int, int]  # (position of the shard's first document, documents, encoder batch size)
ShardTexts = Callable[[int, int], list[str]]  # (start, rows) -> the texts of those documents, in order


def encode_shard(encoder: Encoder, texts: Sequence[str], batch_size: int, normalize: bool, progress: Any = None) -> np.ndarray:
    """float32 embeddings of one shard's `texts`, in their order: the one encoding path of the
    single-process build and of every worker."""
    return encoder.encode_documents(texts, batch_size=batch_size, normalize=normalize, progress=progress)


def encode_in_process(encoder: Encoder, jobs: Sequence[ShardJob], texts: ShardTexts, normalize: bool,
                      progress: Any = None) -> Iterator[tuple[ShardJob, np.ndarray]]:
    """Each job's embeddings, in order, encoded here; `progress` (a tqdm bar) advances per batch."""
    for job in jobs:
        start, rows, batch_size = job
        yield job, encode_shard(encoder, texts(start, rows), batch_size, normalize, progress)


def cpu_seconds() -> float:
    """User + system CPU seconds this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class EncodeWorker:
    """What one pool actor runs: loads the encoder once (checked to be the driver's by its weights'
    sha256), then encodes whole shards with `threads` torch threads."""

    def __init__(self, name: str, weights_sha256: str, device: str | None, threads: int):
        self._cpu_at_start = cpu_seconds()
        import torch

        torch.set_num_threads(threads)
        self.encoder = load_encoder(name, device=device)
        if self.encoder.weights_sha256 != weights_sha256:
            raise ValueError(f"encoder {name!r} loads other weights on this node (pid {os.getpid()}): sha256 "
                             f"{self.encoder.weights_sha256[:12]}..., the driver's {weights_sha256[:12]}...")

    def ready(self) -> int:
        return os.getpid()

    def encode(self, texts: Sequence[str], batch_size: int, normalize: bool) -> np.ndarray:
        return encode_shard(self.encoder, texts, batch_size, normalize)

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU seconds of this actor's process since it began loading the encoder, and since it started
        (Ray's worker start-up included)."""
        now = cpu_seconds()
        return now - self._cpu_at_start, now


class EncodePool:
    """Up to `workers` `EncodeWorker` actors on the running Ray, each asking for 1 CPU and
    `gpus_per_worker` GPUs (then its encoder runs on cuda, else on `device`). Use as a context
    manager: the actors are killed on exit."""

    def __init__(self, encoder: Encoder, *, workers: int, gpus_per_worker: float = 0.0, device: str | None = None,
                 max_restarts: int = 3, start_timeout_s: float = 600.0):
        import ray

        if not ray.is_initialized():
            raise RuntimeError("encoding with workers needs a running Ray: call ray.init() first (`rankline index "
                               "--workers` connects to RAY_ADDRESS or starts a local one)")
        self.workers, self.gpus_per_worker = workers, gpus_per_worker
        self.max_restarts, self.start_timeout_s = max_restarts, start_timeout_s
        self.args = (_portable_name(encoder.name), encoder.weights_sha256, "cuda" if gpus_per_worker else device, 1)
        self.actors: list[Any] = []
        self.cpu_seconds: list[tuple[float, float]] = []  # EncodeWorker.cpu_seconds of each actor alive at the end

    def __enter__(self) -> EncodePool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _start(self, count: int) -> None:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        from rankline.retrieval.sharding import ray_error_message

        remote = ray.remote(EncodeWorker).options(num_cpus=1, num_gpus=self.gpus_per_worker, max_restarts=self.max_restarts,
                                                  max_task_retries=self.max_restarts)
        self.actors = [remote.remote(*self.args) for _ in range(count)]
        try:
            ray.get([a.ready.remote() for a in self.actors], timeout=self.start_timeout_s)
        except GetTimeoutError:
            raise RuntimeError(f"{count} encode workers did not start within {self.start_timeout_s:g} s: the Ray cluster "
                               f"may lack the CPUs or GPUs they ask for (1 CPU, {self.gpus_per_worker:g} GPU each)") from None
        except RayActorError as exc:
            raise ValueError(f"an encode worker cannot start: {ray_error_message(exc)}") from None

    def encode(self, jobs: Sequence[ShardJob], texts: ShardTexts, normalize: bool,
               progress: Any = None) -> Iterator[tuple[ShardJob, np.ndarray]]:
        """Each job's embeddings as soon as an actor returns them (in no set order); one job in flight
        per actor; `progress` advances by a shard's documents when it comes back."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        from rankline.retrieval.sharding import ray_error_message

        if not jobs:
            return
        if len(jobs) < self.workers:
            warnings.warn(f"{len(jobs)} shard(s) to encode: {len(jobs)} of the {self.workers} workers start (each encodes "
                          "whole shards; a smaller --shard-size spreads a build over more of them)", stacklevel=2)
        self._start(min(self.workers, len(jobs)))
        queue, idle, running = deque(jobs), list(self.actors), {}
        while queue or running:
            while queue and idle:
                actor, job = idle.pop(), queue.popleft()
                start, rows, batch_size = job
                running[actor.encode.remote(texts(start, rows), batch_size, normalize)] = (actor, job)
            [ref], _ = ray.wait(list(running), num_returns=1)
            actor, (start, rows, batch_size) = running.pop(ref)
            try:
                emb = np.array(ray.get(ref))  # a copy: the shard does not stay pinned in the object store
            except RayTaskError as exc:
                raise ValueError(f"encoding documents {start}..{start + rows - 1}: {ray_error_message(exc)}") from None
            except RayActorError as exc:  # dead and out of restarts: another actor takes its shard
                self.actors.remove(actor)
                queue.appendleft((start, rows, batch_size))
                if not self.actors:
                    raise RuntimeError(f"every encode worker died, the last one while encoding documents {start}.."
                                       f"{start + rows - 1} ({ray_error_message(exc)}); the shards finished so far "
                                       "are kept: run the same command again to resume") from None
                continue
            idle.append(actor)
            if progress is not None:
                progress.update(rows)
            yield (start, rows, batch_size), emb
        self.cpu_seconds = ray.get([a.cpu_seconds.remote() for a in self.actors])

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []


def _portable_name(name: str) -> str:
    """`name` as the actors should load it: a local encoder folder by its absolute path (an actor's
    working directory is not the driver's), a packaged model or model id as given."""
    folder = Path(name).expanduser()
    return str(folder.resolve()) if resolve_encoder(name) == name and folder.is_dir() else name
