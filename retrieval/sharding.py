"""Sharded dense search: the rows of a flat (exact) or IVF-PQ index split into S contiguous shards,
each searched on its own (in this process, or each in its own Ray actor), and the shards' top-k
merged into exactly the unsharded index's top-k, in trec_eval order (score as float32 descending,
then docid descending).

    retriever = open_sharded_retriever("indexes/scifact", shards=4)                  # in-process
    retriever = open_sharded_retriever("indexes/scifact", shards=4, placement="ray",
                                       num_cpus=1, resources={"shard_host": 1})      # one actor each
    retriever.search_batch(queries, k=100)

A shard is rows start..stop-1 of the index, read from the index folder's embedding files
(dense-shards/*.npy, the vectors the flat FAISS index was built from), each checked against the
sha256 the manifest records before it is used: a sharded search is as verified as an unsharded one,
and a shard reads only its own part (a shard's memory is 1/S of the index). Any S works on any
flat index folder; nothing is rebuilt to change S.

Exact scores. FAISS sums an inner product in float32 in an order that depends on where the vector
sits (its row within a 1024-row BLAS block, the OpenMP threads, the query batch size), so the same
query and document can differ in the last bit between a shard and the whole index, and a top-k
cut could differ with them. Each shard therefore uses FAISS only to find candidates and rescores
them with one fixed rule, `exact_scores`: float32 inputs multiplied in float64 (exact), summed in
dimension order, rounded once to float32. A document's score then depends only on its vector and
the query, the same in every shard, process and machine. A shard fetches more candidates than k and
widens its FAISS search until the k-th rescored candidate lies strictly above the last FAISS score
plus a bound on FAISS's rounding error ((d + 4) * 2**-23 * |q| * max |x|, above the textbook
gamma_d bound for a d-term float32 sum), so no document it did not fetch can rank above it, a tie
included. The merged top-k is the exact top-k of the whole index under that score; its scores equal
FAISS's to within that bound, and equal them bit for bit wherever FAISS's arithmetic is exact.

IVF-PQ. An index folder built with `--index-type ivfpq` (factory IVFnlist,PQm[xbits]) shards too: each
shard reads the folder's FAISS file (checked against the manifest) and keeps the codes of its own rows
only, so every shard holds the one trained coarse quantizer and product quantizer and exactly the codes
the whole index holds. The retriever computes each query's probed lists once with that coarse
quantizer's centroids (`IVFProbes`) and every shard scans those lists (`search_preassigned`): a shard's candidates
are the whole index's candidates that are its rows, each scored from the query, its list's centroid
and its code alone, so merging the shards' top k gives the whole IVF-PQ index's top k in trec_eval
order, scores bit for bit (checked by the tests: FAISS's IVF-PQ score of a code does not depend on
where it sits in its list). A shard's memory is its rows' codes and ids plus the shared quantizers.

A shard served by a Ray actor is restarted by Ray after a crash (up to `max_restarts` times); a
search waits for the restart and its calls are retried, or, with `wait_for_restart=False` (what a
service wants: it answers 503 and the client retries), fails at once with `ShardUnavailableError`
while the shard is down. A shard that stays dead fails the whole search with `ShardUnavailableError`
naming it: results are never silently partial.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rankline.formats import Hit, Query, trec_order
from rankline.retrieval.base import PyTerrierRetriever, check_queries
from rankline.retrieval.corpus import file_sha256
from rankline.retrieval.manifest import Manifest

PLACEMENTS = ("local", "ray")
_IVFPQ_FACTORY = re.compile(r"IVF\d+,PQ\d+(x\d+)?(np)?")  # np: built without polysemous training
_ERROR_BOUND_ULPS = 2.0 ** -23  # twice float32's unit roundoff
_RESCORE_CHUNK = 1 << 22  # float64 products rescored at once (32 MiB)

ShardResult = tuple[list[str], np.ndarray]  # one query's top hits of one shard: docids, float32 scores


class ShardUnavailableError(RuntimeError):
    """A shard actor is dead (and out of restarts) or cannot be reached: the search has no result."""


def exact_scores(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """float32 inner products of one query with each row of `vectors`: products in float64 (exact for
    float32 inputs), summed in dimension order, rounded once. The same for a vector wherever it sits."""
    products = vectors.astype(np.float64) * query.astype(np.float64)
    if products.shape[1] == 0:
        return np.zeros(len(products), np.float32)
    return np.cumsum(products, axis=1)[:, -1].astype(np.float32)  # cumsum: strictly left to right


def shard_ranges(count: int, shards: int) -> list[tuple[int, int]]:
    """(start, stop) of `shards` contiguous row ranges covering 0..count-1, sizes differing by at most one."""
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ValueError(f"shards must be a positive integer, got {shards!r}")
    if shards > count:
        raise ValueError(f"cannot split {count} documents into {shards} shards (each shard needs at least one document)")
    bounds = [count * i // shards for i in range(shards + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def merge_topk(parts: Sequence[ShardResult], k: int) -> ShardResult:
    """The top `k` of the union of the shards' top-k lists of one query, in trec_eval order."""
    docids = [d for ids, _ in parts for d in ids]
    if not docids:
        return [], np.empty(0, np.float32)
    scores = np.concatenate([np.asarray(s, np.float32) for _, s in parts])
    order = trec_order(docids, scores)[:k]
    return [docids[i] for i in order], scores[order]


def check_query_vectors(queries: np.ndarray, k: int, dim: int) -> np.ndarray:
    """`queries` as a contiguous float32 (n x dim) array, after checking them and `k`."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"query vectors must have shape (n, {dim}), got {q.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not np.isfinite(q).all():
        raise ValueError(f"query {int(np.nonzero(~np.isfinite(q).all(axis=1))[0][0]) + 1}: the vector holds NaN or infinity")
    return q


class FlatShard:
    """Exact inner-product search over rows start..start+n-1 of an index: `vectors` (n x d float32)
    whose doc ids are `docids`. `search` returns each query's top k in trec_eval order with
    `exact_scores` scores (see the module docstring)."""

    def __init__(self, vectors: np.ndarray, docids: Sequence[str], start: int = 0):
        import faiss

        if vectors.ndim != 2 or vectors.dtype != np.float32:
            raise ValueError(f"shard vectors must be a 2-d float32 array, got {vectors.dtype} of shape {vectors.shape}")
        if len(docids) != len(vectors) or not len(vectors):
            raise ValueError(f"a shard needs one doc id per vector and at least one vector; got {len(docids)} ids, {len(vectors)} vectors")
        n, dim = vectors.shape
        self.start, self.dim, self.docids = start, dim, list(docids)
        self.index = faiss.IndexFlatIP(dim)
        self.index.add(np.ascontiguousarray(vectors))
        self.vectors = faiss.rev_swig_ptr(self.index.get_xb(), n * dim).reshape(n, dim)  # the index's own copy, no second one
        self.max_norm = max(float(np.sqrt(np.square(self.vectors[i : i + 65536], dtype=np.float64).sum(axis=1).max()))
                            for i in range(0, n, 65536))
        if not np.isfinite(self.max_norm):
            raise ValueError(f"shard rows {start}..{start + n - 1}: the vectors hold NaN or infinity")

    @property
    def rows(self) -> int:
        return len(self.docids)

    def nbytes(self) -> int:
        """Bytes the shard's vectors take (its FAISS index)."""
        return self.vectors.nbytes

    def search(self, queries: np.ndarray, k: int) -> list[ShardResult]:
        """Each query's top `k` documents of this shard (fewer when the shard is smaller): doc ids and
        float32 scores, in trec_eval order."""
        q = check_query_vectors(queries, k, self.dim)
        n, k = self.rows, int(k)
        bound = (self.dim + 4) * _ERROR_BOUND_ULPS * np.linalg.norm(q.astype(np.float64), axis=1) * self.max_norm
        out: list[ShardResult | None] = [None] * len(q)
        todo = np.arange(len(q))
        fetch = min(n, k + max(8, k // 8))
        while len(todo):
            faiss_scores, ids = self.index.search(q[todo], fetch)
            again = []
            per_chunk = max(1, _RESCORE_CHUNK // (fetch * self.dim))
            for lo in range(0, len(todo), per_chunk):
                rows = todo[lo : lo + per_chunk]
                cand = ids[lo : lo + per_chunk]
                products = self.vectors[cand].astype(np.float64) * q[rows, None, :].astype(np.float64)
                rescored = np.cumsum(products, axis=2)[:, :, -1].astype(np.float32)
                for j, r in enumerate(rows):
                    docids = [self.docids[i] for i in cand[j]]
                    order = trec_order(docids, rescored[j])[:k]
                    last = float(faiss_scores[lo + j, fetch - 1])
                    if fetch >= n or (len(order) == k and float(rescored[j][order[-1]]) > last + bound[r]):
                        out[r] = ([docids[i] for i in order], rescored[j][order])
                    else:  # a document not fetched might still rank among the top k: fetch more
                        again.append(r)
            todo = np.array(again, dtype=np.int64)
            fetch = min(n, fetch * 2)
        return out  # type: ignore[return-value]


def _ivfpq(index: Any) -> Any:
    """`index` as a FAISS IndexIVFPQ scoring by inner product, or ValueError."""
    import faiss

    ivf = faiss.downcast_index(index)
    if not isinstance(ivf, faiss.IndexIVFPQ) or ivf.metric_type != faiss.METRIC_INNER_PRODUCT or not ivf.by_residual:
        raise ValueError(f"expected a FAISS IVF-PQ index (IndexIVFPQ, inner product, by residual), got {type(ivf).__name__}")
    if ivf.polysemous_ht:
        raise ValueError("IVF-PQ shards do not support polysemous filtering (polysemous_ht must be 0)")
    return ivf


def _keep_rows(ivf: Any, start: int, stop: int) -> None:
    """Replace the inverted lists of `ivf` (ids = row numbers) by copies holding only rows start..stop-1."""
    import faiss

    src, size = ivf.invlists, ivf.code_size
    kept = faiss.ArrayInvertedLists(ivf.nlist, size)
    count = 0
    for lst in range(ivf.nlist):
        n = src.list_size(lst)
        if not n:
            continue
        ids = faiss.rev_swig_ptr(src.get_ids(lst), n)
        keep = np.nonzero((ids >= start) & (ids < stop))[0]
        if len(keep):  # named arrays: a swig_ptr does not keep its array alive
            kept_ids = np.ascontiguousarray(ids[keep])
            kept_codes = np.ascontiguousarray(faiss.rev_swig_ptr(src.get_codes(lst), n * size).reshape(n, size)[keep])
            kept.add_entries(lst, len(keep), faiss.swig_ptr(kept_ids), faiss.swig_ptr(kept_codes))
            count += len(keep)
    ivf.replace_invlists(kept, True)  # the index owns (and frees) the copies; the old lists are freed
    kept.this.disown()
    ivf.ntotal = count


class IVFPQShard:
    """Rows start..stop-1 of an IVF-PQ index whose ids are row numbers: `index` (taken over, its other
    rows dropped) keeps its trained coarse quantizer and product quantizer and the codes of these rows;
    `docids` are the rows' doc ids. `search` scans the lists it is given (`IVFProbes`) and returns each
    query's top k in trec_eval order with FAISS's IVF-PQ scores."""

    def __init__(self, index: Any, docids: Sequence[str], start: int, stop: int):
        ivf = _ivfpq(index)
        if len(docids) != stop - start or stop <= start:
            raise ValueError(f"an IVF-PQ shard needs one doc id per row of {start}..{stop - 1}, got {len(docids)}")
        _keep_rows(ivf, start, stop)
        if ivf.ntotal != stop - start:
            raise ValueError(f"the IVF-PQ index holds {ivf.ntotal} of rows {start}..{stop - 1}, not all {stop - start}")
        self.index, self.ivf, self.docids, self.start, self.dim = index, ivf, list(docids), start, ivf.d

    @property
    def rows(self) -> int:
        return len(self.docids)

    def nbytes(self) -> int:
        """Bytes the shard holds: its rows' codes and 8-byte ids, the coarse centroids and the PQ centroids."""
        pq = self.ivf.pq
        return self.rows * (self.ivf.code_size + 8) + self.ivf.nlist * self.dim * 4 + pq.M * pq.ksub * pq.dsub * 4

    def centroids(self) -> np.ndarray:
        """The coarse quantizer's centroids (nlist x d float32), the same in every shard of an index."""
        return self.ivf.quantizer.reconstruct_n(0, self.ivf.nlist)

    def search(self, queries: np.ndarray, k: int, probes: np.ndarray) -> list[ShardResult]:
        """Each query's top `k` of this shard's rows in the lists `probes[i]` (fewer when they hold fewer):
        doc ids and FAISS's float32 scores, in trec_eval order. Fetches more than k from FAISS and
        widens until the k-th lies strictly above the last fetched (a tie at the k-th is resolved by doc id)."""
        q = check_query_vectors(queries, k, self.dim)
        probes = np.ascontiguousarray(probes, dtype=np.int64)
        if probes.ndim != 2 or len(probes) != len(q) or not ((probes >= -1) & (probes < self.ivf.nlist)).all():
            raise ValueError(f"probes must be one row of list numbers in -1..{self.ivf.nlist - 1} per query, got shape {probes.shape}")
        self.ivf.nprobe = probes.shape[1]  # search_preassigned scans that many lists of each row of probes
        unused = np.zeros(probes.shape, np.float32)  # coarse scores: for inner product FAISS recomputes each list's own
        k = int(k)
        out: list[ShardResult | None] = [None] * len(q)
        todo = np.arange(len(q))
        fetch = min(self.rows, k + max(8, k // 8))
        while len(todo):
            scores, ids = self.ivf.search_preassigned(q[todo], fetch, probes[todo], unused[todo])
            again = []
            untied = (scores[:, 1:] != scores[:, :-1]).all(axis=1)  # FAISS's order (score descending) is then trec_eval's
            for j, r in enumerate(todo):
                if untied[j]:  # and the k-th lies above every unfetched candidate: settled as FAISS returned it
                    top = ids[j, :k][ids[j, :k] >= 0]
                    out[r] = ([self.docids[i] for i in (top - self.start).tolist()], scores[j, : len(top)])
                    continue
                found = ids[j] >= 0
                docids = [self.docids[i] for i in (ids[j][found] - self.start).tolist()]
                row_scores = scores[j][found]
                order = trec_order(docids, row_scores)[:k]
                if not found.all() or fetch >= self.rows or float(row_scores[order[-1]]) > float(scores[j, fetch - 1]):
                    out[r] = ([docids[i] for i in order], row_scores[order])
                else:  # a document tied with the k-th may not have been fetched
                    again.append(r)
            todo = np.array(again, dtype=np.int64)
            fetch = min(self.rows, fetch * 2)
        return out  # type: ignore[return-value]


def check_nprobe(nprobe: Any) -> None:
    if isinstance(nprobe, bool) or not isinstance(nprobe, int) or nprobe < 1:
        raise ValueError(f"nprobe must be a positive integer, got {nprobe!r}")


class IVFProbes:
    """The inverted lists each query probes: the `nprobe` lists whose centroids have the largest float32
    inner products with it (numpy; the lists FAISS's own coarse quantizer picks, unless two centroids'
    products tie within float32 rounding at the nprobe-th place), computed once for all shards."""

    def __init__(self, centroids: np.ndarray, nprobe: int):
        check_nprobe(nprobe)
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.nprobe = min(nprobe, len(self.centroids))

    def __call__(self, queries: np.ndarray) -> np.ndarray:
        scores = check_query_vectors(queries, 1, self.centroids.shape[1]) @ self.centroids.T
        if self.nprobe == len(self.centroids):
            return np.tile(np.arange(self.nprobe), (len(scores), 1))
        return np.argpartition(-scores, self.nprobe - 1, axis=1)[:, : self.nprobe]


Shard = FlatShard | IVFPQShard


def search_shard(shard: Shard, queries: np.ndarray, k: int, probes: np.ndarray | None) -> list[ShardResult]:
    """`shard.search`, given the probed lists when it is an IVF-PQ shard."""
    if isinstance(shard, IVFPQShard):
        if probes is None:
            raise ValueError("an IVF-PQ shard needs the probed lists of the queries (IVFProbes)")
        return shard.search(queries, k, probes)
    return shard.search(queries, k)


# -- shards of an index folder -------------------------------------------------------------------------

def shardable_kind(folder: Path, manifest: Manifest) -> str:
    """"flat" or "ivfpq": the kind of the dense index in `folder`, after checking that sharded search can
    read it (a flat index's embedding files cover every document; an IVF-PQ index is IVFnlist,PQm[xbits])."""
    if manifest.dense is None:
        raise ValueError(f"{folder}: this index has no dense part; build it with `rankline index CORPUS --out {folder} --dense`")
    factory = str(manifest.dense.get("factory"))
    if _IVFPQ_FACTORY.fullmatch(factory):
        return "ivfpq"
    if factory != "Flat":
        raise ValueError(f"{folder}: sharded search covers flat indexes (exact) and IVF-PQ indexes (IVFnlist,PQm) only; this "
                         f"index is {manifest.dense.get('index_type')!r} ({factory}); build one with --index-type flat or ivfpq")
    pos = 0
    for entry in manifest.shards():
        if entry["start"] != pos:
            break
        pos += entry["rows"]
    if pos != manifest.count:
        raise ValueError(f"{folder}: its embedding files (dense-shards/) do not cover documents {pos}..{manifest.count - 1}, "
                         "which sharded search reads; build the index again into an empty folder with this rankline")
    return "flat"


def _verified_bytes(folder: Path, manifest: Manifest, rel: str) -> bytes:
    path = folder / rel
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise manifest.damage_error(folder, rel, f"missing from the index folder (listed in {folder / 'manifest.json'})") from None
    if hashlib.sha256(data).hexdigest() != manifest.files.get(rel):
        raise manifest.damage_error(folder, rel, "checksum mismatch: the file is truncated or corrupted")
    return data


def _verified_path(folder: Path, manifest: Manifest, rel: str) -> Path:
    path = folder / rel
    if not path.is_file():
        raise manifest.damage_error(folder, rel, "missing from the index folder")
    if file_sha256(path) != manifest.files[rel]:
        raise manifest.damage_error(folder, rel, "checksum mismatch: the file is truncated or corrupted")
    return path


def verify_docstore(folder: Path, manifest: Manifest) -> Path:
    """The document store's path, after checking its sha256 against the manifest."""
    return _verified_path(folder, manifest, manifest.docstore)


def shard_files(index_dir: str | os.PathLike, shards: int) -> list[list[str]]:
    """For each of `shards` shards of the index in `index_dir`, the files (relative to the folder) its
    actor reads: manifest.json, the document store and, for a flat index, the embedding files that
    overlap its rows (a node that serves only some shards needs only their files), for an IVF-PQ index
    the FAISS file."""
    from rankline.retrieval.manifest import MANIFEST
    from rankline.retrieval.retrievers import open_index

    folder = Path(index_dir)
    manifest = open_index(folder, verify=False)
    if shardable_kind(folder, manifest) == "ivfpq":
        return [[MANIFEST, manifest.docstore, manifest.dense["file"]] for _ in shard_ranges(manifest.count, shards)]
    return [[MANIFEST, manifest.docstore] + [e["file"] for e in manifest.shards() if e["start"] < stop and e["start"] + e["rows"] > start]
            for start, stop in shard_ranges(manifest.count, shards)]


def load_flat_shard(index_dir: str | os.PathLike, start: int, stop: int, *, verify_docstore_file: bool = True) -> FlatShard:
    """Rows start..stop-1 of the flat index in `index_dir`, from its embedding files (each checked
    against the manifest's sha256; a damaged one is refused, naming it) and its document store
    (checked too, unless `verify_docstore_file` is False: the caller has just checked it)."""
    from rankline.retrieval.docstore import DocStore
    from rankline.retrieval.retrievers import open_index

    folder = Path(index_dir)
    manifest = open_index(folder, verify=False)
    if shardable_kind(folder, manifest) != "flat":
        raise ValueError(f"{folder}: not a flat index; open its shards with load_shard")
    _check_rows(folder, manifest, start, stop)
    dim = int(manifest.dense["dim"])
    parts = []
    for entry in manifest.shards():
        lo, hi = max(start, entry["start"]), min(stop, entry["start"] + entry["rows"])
        if lo >= hi:
            continue
        emb = np.load(io.BytesIO(_verified_bytes(folder, manifest, entry["file"])), allow_pickle=False)
        if emb.shape != (entry["rows"], dim) or emb.dtype != np.float32:
            raise manifest.damage_error(folder, entry["file"], f"holds {emb.dtype} {emb.shape}, the manifest says float32 ({entry['rows']}, {dim})")
        parts.append(emb[lo - entry["start"] : hi - entry["start"]])
    with DocStore(verify_docstore(folder, manifest) if verify_docstore_file else folder / manifest.docstore) as store:
        docids = store.docids_at(range(start, stop))
    return FlatShard(np.concatenate(parts) if len(parts) > 1 else parts[0], docids, start)


def _check_rows(folder: Path, manifest: Manifest, start: int, stop: int) -> None:
    if not 0 <= start < stop <= manifest.count:
        raise ValueError(f"{folder}: shard rows {start}..{stop - 1} are not within its {manifest.count} documents")


def load_ivfpq_shard(index_dir: str | os.PathLike, start: int, stop: int, *, verify_docstore_file: bool = True) -> IVFPQShard:
    """Rows start..stop-1 of the IVF-PQ index in `index_dir`: its FAISS file (checked against the
    manifest's sha256; the whole index is read once, then only these rows' codes are kept) and its
    document store (checked too, unless `verify_docstore_file` is False)."""
    from rankline.retrieval import faiss_index
    from rankline.retrieval.docstore import DocStore
    from rankline.retrieval.retrievers import open_index

    folder = Path(index_dir)
    manifest = open_index(folder, verify=False)
    if shardable_kind(folder, manifest) != "ivfpq":
        raise ValueError(f"{folder}: not an IVF-PQ index; open its shards with load_shard")
    _check_rows(folder, manifest, start, stop)
    rel = manifest.dense["file"]
    index = faiss_index.read(_verified_path(folder, manifest, rel))
    if index.ntotal != manifest.count:
        raise manifest.damage_error(folder, rel, f"holds {index.ntotal} vectors, the index {manifest.count} documents")
    with DocStore(verify_docstore(folder, manifest) if verify_docstore_file else folder / manifest.docstore) as store:
        docids = store.docids_at(range(start, stop))
    try:
        return IVFPQShard(index, docids, start, stop)
    except ValueError as exc:
        raise manifest.damage_error(folder, rel, str(exc)) from None


def load_shard(index_dir: str | os.PathLike, start: int, stop: int, *, verify_docstore_file: bool = True) -> Shard:
    """Rows start..stop-1 of the flat or IVF-PQ index in `index_dir` (`load_flat_shard`, `load_ivfpq_shard`)."""
    from rankline.retrieval.retrievers import open_index

    folder = Path(index_dir)
    load = load_ivfpq_shard if shardable_kind(folder, open_index(folder, verify=False)) == "ivfpq" else load_flat_shard
    return load(folder, start, stop, verify_docstore_file=verify_docstore_file)


# -- scatter-gather ------------------------------------------------------------------------------------

class LocalShards:
    """Shards held in this process, searched one after another (FAISS uses every core for each)."""

    def __init__(self, shards: Sequence[Shard]):
        self.shards = list(shards)

    def search(self, queries: np.ndarray, k: int, probes: np.ndarray | None = None) -> list[list[ShardResult]]:
        return [search_shard(shard, queries, k, probes) for shard in self.shards]

    def centroids(self) -> np.ndarray:
        return self.shards[0].centroids()

    def info(self) -> list[dict[str, Any]]:
        return [{"start": s.start, "rows": s.rows, "bytes": s.nbytes(), "node_id": None, "pid": os.getpid()} for s in self.shards]

    def close(self) -> None:
        self.shards = []


class ShardServer:
    """What a shard's Ray actor runs: loads rows start..stop-1 of an index folder, answers searches."""

    def __init__(self, index_dir: str, start: int, stop: int):
        self.shard = load_shard(index_dir, start, stop)

    def search(self, queries: np.ndarray, k: int, probes: np.ndarray | None = None) -> list[ShardResult]:
        return search_shard(self.shard, queries, k, probes)

    def centroids(self) -> np.ndarray:
        return self.shard.centroids()

    def info(self) -> dict[str, Any]:
        import ray

        context = ray.get_runtime_context()
        return {"start": self.shard.start, "rows": self.shard.rows, "bytes": self.shard.nbytes(),
                "node_id": context.get_node_id(), "pid": os.getpid(), "actor_id": context.get_actor_id()}


def ray_error_message(exc: BaseException) -> str:
    """The message of the error behind a Ray error (an actor's failed constructor, a task's exception)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and cause is not exc:
        return ray_error_message(cause)
    text = str(exc)
    lines = [line for line in text.splitlines() if line.strip()]
    for line in reversed(lines):  # "ValueError: /path: ..." of the traceback Ray carries
        head, sep, rest = line.partition(": ")
        if sep and head.strip().endswith(("Error", "Exception")):
            return rest.strip()
    return " ".join(text.split())


class RayShards:
    """One Ray actor per shard (`ShardServer`); a search sends the query vectors to every shard once
    (one object in Ray's store) and waits for all of them. A call to a shard whose actor died waits
    for Ray to restart it (`wait_for_restart`) or fails at once with ShardUnavailableError."""

    def __init__(self, index_dir: str, ranges: Sequence[tuple[int, int]], *, num_cpus: float = 1,
                 resources: Mapping[str, float] | Sequence[Mapping[str, float]] | None = None, max_restarts: int = 3,
                 start_timeout_s: float = 300.0, wait_for_restart: bool = True):
        import ray

        if not ray.is_initialized():
            raise RuntimeError("sharded search on Ray needs a running Ray: call ray.init() (or use "
                               "rankline.pipelines.sharded.open_sharded_on_ray, which starts a local one)")
        per_shard = _per_shard_resources(resources, len(ranges))
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError(f"max_restarts must be a non-negative integer, got {max_restarts!r}")
        self.index_dir, self.ranges = index_dir, list(ranges)
        self.wait_for_restart = wait_for_restart
        self.call_retries = max_restarts if wait_for_restart else 0
        remote = ray.remote(ShardServer)
        self.actors = []
        for (start, stop), res in zip(self.ranges, per_shard):
            options: dict[str, Any] = {"num_cpus": num_cpus, "max_restarts": max_restarts, "max_task_retries": max_restarts}
            if res:
                options["resources"] = dict(res)
            self.actors.append(remote.options(**options).remote(index_dir, start, stop))
        try:
            self.started = self._gather([a.info.remote() for a in self.actors], timeout=start_timeout_s, starting=True)
        except BaseException:
            self.close()
            raise

    def _where(self, i: int) -> str:
        start, stop = self.ranges[i]
        return f"shard {i + 1} of {len(self.ranges)} (rows {start}..{stop - 1} of {self.index_dir})"

    def _gather(self, refs: list, *, timeout: float | None = None, starting: bool = False) -> list:
        import ray
        from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayError, RayTaskError

        out = []
        for i, ref in enumerate(refs):
            try:
                out.append(ray.get(ref, timeout=timeout))
            except GetTimeoutError:
                raise ShardUnavailableError(f"{self._where(i)} did not start within {timeout:g} s: the Ray cluster may lack "
                                            "the CPUs or custom resources its actor asks for") from None
            except RayTaskError as exc:  # the shard ran and raised: bad input, a bug
                raise ValueError(f"{self._where(i)}: {ray_error_message(exc)}") from None
            except ActorUnavailableError:  # a call not retried (wait_for_restart=False) while Ray restarts it
                raise self._down(i, "RESTARTING") from None
            except RayActorError as exc:
                message = ray_error_message(exc)
                if starting:  # its constructor failed: a damaged or missing file, named in the message
                    raise ValueError(f"{self._where(i)} cannot start: {message}") from None
                raise ShardUnavailableError(f"{self._where(i)} is unavailable (its actor died and is out of restarts): "
                                            f"{message}; no partial results are returned") from None
            except RayError as exc:
                raise ShardUnavailableError(f"{self._where(i)} is unavailable: {ray_error_message(exc)}") from None
        return out

    def search(self, queries: np.ndarray, k: int, probes: np.ndarray | None = None) -> list[list[ShardResult]]:
        import ray

        ref = ray.put(np.ascontiguousarray(queries, dtype=np.float32))
        refs = [actor.search.options(max_task_retries=self.call_retries).remote(ref, k, probes) for actor in self.actors]
        if not self.wait_for_restart:
            self._fail_while_down(refs)
        return self._gather(refs)

    def _fail_while_down(self, refs: list) -> None:
        """Wait for `refs`; while some are pending, ask Ray every `_STATE_POLL_S` what state their shards'
        actors are in, and fail with ShardUnavailableError (cancelling the pending calls) as soon as one
        is restarting or dead: a call sent to a restarting actor would otherwise wait for the restart."""
        import ray

        pending = list(refs)
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=_STATE_POLL_S)
            for ref in pending:
                i = refs.index(ref)
                state = _actor_state(self.started[i]["actor_id"])
                if state in ("RESTARTING", "DEAD"):
                    for waiting in pending:
                        ray.cancel(waiting)
                    raise self._down(i, state)

    def _down(self, i: int, state: str) -> ShardUnavailableError:
        what = "Ray is restarting it" if state == "RESTARTING" else "it is out of restarts"
        return ShardUnavailableError(f"{self._where(i)} is unavailable (its actor died and {what}); no partial results are returned")

    def info(self) -> list[dict[str, Any]]:
        return self._gather([a.info.remote() for a in self.actors])

    def centroids(self) -> np.ndarray:
        return self._gather([self.actors[0].centroids.remote()])[0]

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []


_STATE_POLL_S = 0.25  # how often a search that does not wait for restarts checks its pending shards' actors


def _actor_state(actor_id: str) -> str | None:
    """The state Ray's GCS holds for an actor (ALIVE, RESTARTING, DEAD, ...), or None when it cannot say.
    Ray's public state API needs the dashboard, which a local rankline Ray does not start; this asks
    the GCS directly through `ray._private.state`."""
    import ray

    try:
        return str(ray._private.state.actors(actor_id=actor_id)["State"])
    except Exception:  # noqa: BLE001 - an unknown state: keep waiting for the call
        return None


def _per_shard_resources(resources: Any, shards: int) -> list[dict[str, float]]:
    if resources is None:
        return [{}] * shards
    if isinstance(resources, Mapping):
        resources = [resources] * shards
    resources = list(resources)
    if len(resources) != shards:
        raise ValueError(f"resources: give one mapping for every shard or one per shard ({shards}), got {len(resources)}")
    for res in resources:
        if not isinstance(res, Mapping) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                                                   for v in res.values()):
            raise ValueError(f"resources must map custom Ray resource names to amounts, got {res!r}")
        if {"CPU", "GPU"} & set(res):
            raise ValueError(f"resources are custom Ray resources, got {sorted({'CPU', 'GPU'} & set(res))}; give CPUs with num_cpus")
    return [dict(r) for r in resources]


# -- the retriever -------------------------------------------------------------------------------------

class ShardedDenseRetriever(PyTerrierRetriever):
    """Dense retrieval over shards of a flat or IVF-PQ index: encodes queries with the index's encoder,
    (IVF-PQ) computes their probed lists once with `probes`, scatters the query vectors to every shard,
    gathers each shard's top k and merges them (`merge_topk`). `shards` is a `LocalShards` or a
    `RayShards`. Opened by `open_sharded_retriever`; a copy sent to another process (pickled) opens its
    own shards there with the same arguments."""

    opened_with: dict[str, Any] | None = None

    def __reduce__(self):
        if self.opened_with is None:
            raise TypeError("this ShardedDenseRetriever holds live shards and cannot be pickled; open it with "
                            "rankline.retrieval.open_sharded_retriever to send it to another process")
        return (_reopen, (self.opened_with,))

    def __init__(self, shards: LocalShards | RayShards, *, probes: IVFProbes | None = None, encoder: Any = None, store: Any = None,
                 normalize: bool = True, batch_size: int = 64, with_text: bool = True):
        self.shards, self.probes, self.encoder, self.store = shards, probes, encoder, store
        self.normalize, self.batch_size, self.with_text = normalize, batch_size, with_text

    def search_vectors(self, queries: np.ndarray, k: int) -> list[ShardResult]:
        """Each query vector's top `k` (doc ids, float32 scores) over all shards, in trec_eval order."""
        from rankline.retrieval.dense import check_k

        check_k(k)
        if not len(queries):
            return []
        per_shard = self.shards.search(queries, k, self.probes(queries) if self.probes is not None else None)
        return [merge_topk([shard[i] for shard in per_shard], k) for i in range(len(queries))]

    def search(self, query: Query, k: int) -> list[Hit]:
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: Sequence[Query], k: int) -> list[list[Hit]]:
        from rankline.retrieval.dense import check_k

        check_k(k)
        check_queries(queries)
        if not queries:
            return []
        if self.encoder is None:
            raise ValueError("this sharded retriever was built from vectors, without an encoder: use search_vectors")
        emb = self.encoder.encode_queries([q.text for q in queries], batch_size=self.batch_size, normalize=self.normalize)
        out = []
        for docids, scores in self.search_vectors(emb, k):
            scored = list(zip(docids, scores.tolist()))
            out.append(self.store.to_hits(scored, with_text=self.with_text) if self.store is not None
                       else [Hit(d, float(s)) for d, s in scored])
        return out

    def info(self) -> list[dict[str, Any]]:
        """Per shard: start, rows, bytes of vectors, the Ray node id (None in-process) and process id."""
        return self.shards.info()

    def close(self) -> None:
        """Release the shards (kills their Ray actors)."""
        self.shards.close()


def open_sharded_retriever(index_dir: str | os.PathLike, shards: int, *, placement: str = "local", num_cpus: float = 1,
                           resources: Mapping[str, float] | Sequence[Mapping[str, float]] | None = None,
                           max_restarts: int = 3, wait_for_restart: bool = True, encoder: Any = None, device: str | None = None,
                           batch_size: int = 64, with_text: bool = True, nprobe: int = 32) -> ShardedDenseRetriever:
    """Dense retrieval over the flat or IVF-PQ index in `index_dir` split into `shards` contiguous
    shards (an IVF-PQ index probes `nprobe` lists per query, as `DenseRetriever` does).

    placement "local": the shards live in this process. "ray": each shard in its own Ray actor
    asking for `num_cpus` CPUs and the custom Ray `resources` (one mapping for every shard, or a list
    with one per shard: e.g. {"shard_host": 1} with one such resource per node spreads the shards one
    per node); Ray restarts a crashed shard actor up to `max_restarts` times, and a search waits for
    that (`wait_for_restart`) or fails at once with ShardUnavailableError. Ray must be running.
    A copy of the retriever sent to another process opens its own shards there.
    """
    from rankline.retrieval.docstore import DocStore
    from rankline.retrieval.encoder import Encoder, load_encoder
    from rankline.retrieval.retrievers import open_index

    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    folder = Path(index_dir)
    manifest = open_index(folder, verify=False)  # every shard verifies the files it reads
    kind = shardable_kind(folder, manifest)
    check_nprobe(nprobe)  # before any shard actor starts
    ranges = shard_ranges(manifest.count, shards)
    spec = manifest.dense
    if spec["encoder"] is None and encoder is None:
        pass  # an index over given vectors (`write_vector_index`): search it with search_vectors
    elif not isinstance(encoder, Encoder):
        encoder = load_encoder(encoder or spec["encoder"], device=device)
    if encoder is not None and encoder.weights_sha256 != spec["encoder_sha256"]:
        raise ValueError(f"{folder}: encoder {encoder.name!r} does not match the index's "
                         f"({spec['encoder']!r}, weights sha256 {spec['encoder_sha256'][:12]}...)")
    store = DocStore(verify_docstore(folder, manifest))
    if placement == "local":
        backend: LocalShards | RayShards = LocalShards([load_shard(folder, lo, hi, verify_docstore_file=False) for lo, hi in ranges])
    else:
        backend = RayShards(str(folder.resolve()), ranges, num_cpus=num_cpus, resources=resources, max_restarts=max_restarts,
                            wait_for_restart=wait_for_restart)
    probes = IVFProbes(backend.centroids(), nprobe) if kind == "ivfpq" else None
    retriever = ShardedDenseRetriever(backend, probes=probes, encoder=encoder, store=store, normalize=bool(spec["normalize"]),
                                      batch_size=batch_size, with_text=with_text)
    retriever.opened_with = {"index_dir": str(folder.resolve()), "shards": shards, "placement": placement, "num_cpus": num_cpus,
                             "resources": resources, "max_restarts": max_restarts, "wait_for_restart": wait_for_restart,
                             "encoder": encoder and encoder.name, "device": device,
                             "batch_size": batch_size, "with_text": with_text, "nprobe": nprobe}
    return retriever


def _reopen(opened_with: dict[str, Any]) -> ShardedDenseRetriever:
    return open_sharded_retriever(**opened_with)


def write_vector_index(index_dir: str | os.PathLike, vectors: np.ndarray, docids: Sequence[str], *, shard_size: int = 8192,
                       texts: Sequence[str] | None = None, index: Any = None) -> Manifest:
    """Write a new index folder over given float32 `vectors` (row i is document `docids[i]`, with
    text `texts[i]` or ""), laid out and checksummed as `rankline index` lays out a dense index, with no
    encoder (searched by vector: `ShardedDenseRetriever.search_vectors`). Its FAISS index is a flat one
    built here, or `index`: an IVF-PQ index over exactly these vectors (id i = row i; e.g. trained on a
    sample). For synthetic benchmarks and tests; `index_dir` must not hold an index yet."""
    from rankline.formats import Doc, atomic_write
    from rankline.retrieval import faiss_index
    from rankline.retrieval.build import SHARDS
    from rankline.retrieval.docstore import DocStore
    from rankline.retrieval.manifest import MANIFEST, checksums

    folder = Path(index_dir)
    if (folder / MANIFEST).exists():
        raise ValueError(f"{folder}: already holds an index; write a vector index into a new folder")
    vectors = np.ascontiguousarray(vectors)
    if vectors.ndim != 2 or vectors.dtype != np.float32 or len(vectors) != len(docids) or not len(vectors):
        raise ValueError(f"vectors must be a non-empty 2-d float32 array with one doc id per row; got {vectors.dtype} "
                         f"{vectors.shape} and {len(docids)} doc ids")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    if index is None:
        index, index_type, factory = faiss_index.build(vectors, "Flat"), "flat", "Flat"
    else:
        ivf = _ivfpq(index)
        if ivf.ntotal != len(vectors) or ivf.d != vectors.shape[1]:
            raise ValueError(f"index holds {ivf.ntotal} vectors of {ivf.d} dimensions, not the {vectors.shape} given")
        index_type, factory = "ivfpq", f"IVF{ivf.nlist},PQ{ivf.pq.M}x{ivf.pq.nbits}"
    (folder / SHARDS).mkdir(parents=True, exist_ok=True)
    with DocStore(folder / "docs-1.sqlite", writable=True) as store:
        store.append((Doc(str(d), texts[i] if texts is not None else "") for i, d in enumerate(docids)), source="docids")
    shards = []
    for start in range(0, len(vectors), shard_size):
        rel = f"{SHARDS}/{start:012d}.npy"
        buf = io.BytesIO()
        np.save(buf, vectors[start : start + shard_size], allow_pickle=False)
        with atomic_write(folder / rel, "wb") as fh:
            fh.write(buf.getvalue())
        shards.append({"file": rel, "start": start, "rows": len(vectors[start : start + shard_size]), "batch_size": shard_size})
    faiss_index.write(index, str(folder / "dense-1.faiss"))
    files = checksums(folder, ["docs-1.sqlite", "dense-1.faiss", *[s["file"] for s in shards]])
    dense = {"file": "dense-1.faiss", "encoder": None, "encoder_sha256": None, "dim": int(vectors.shape[1]), "normalize": False,
             "index_type": index_type, "factory": factory, "shard_size": shard_size, "metric": "inner_product",
             "count": len(vectors), "shards": shards}
    manifest = Manifest(generation=1, count=len(vectors), sources=[], docstore="docs-1.sqlite", files=files, dense=dense)
    manifest.write(folder)
    return manifest
