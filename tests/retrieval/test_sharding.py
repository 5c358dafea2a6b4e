"""Sharded exact dense search (issue 17), in-process: the merge of S shards' top-k equals the
unsharded index's top-k in trec_eval order.

Oracles: FAISS's own flat search over the whole index, where its arithmetic is exact (small integer
vectors: every inner product is an integer, so FAISS's float32 sums are exact in any order), sorted
in trec_eval order; a brute-force scan of every vector with `exact_scores` (no FAISS, no
candidates, no widening) for float vectors; math.fsum for `exact_scores` itself; and
open_retriever's unsharded DenseRetriever on a real index folder."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from rankline.formats import Query, trec_order
from rankline.retrieval import BuildOptions, build_index, open_retriever
from rankline.retrieval.sharding import (
    FlatShard,
    IVFPQShard,
    IVFProbes,
    LocalShards,
    ShardedDenseRetriever,
    exact_scores,
    load_flat_shard,
    merge_topk,
    open_sharded_retriever,
    shard_files,
    shard_ranges,
    write_vector_index,
)

from .conftest import DOCS_A, DOCS_B, write_beir_corpus


def _docids(n: int, seed: int = 0) -> list[str]:
    """Doc ids whose order is not the row order, so ties are broken by id, not by position."""
    return [f"d{i:04d}" for i in np.random.default_rng(seed).permutation(n)]


def _trec_topk(docids: list[str], scores: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
    order = trec_order(docids, scores.astype(np.float32))[:k]
    return [docids[i] for i in order], scores.astype(np.float32)[order]


def _faiss_oracle(vectors: np.ndarray, docids: list[str], queries: np.ndarray, k: int):
    """The unsharded FAISS flat index's whole ranking of each query, in trec_eval order, cut at k."""
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    scores, ids = index.search(queries, len(vectors))
    return [_trec_topk([docids[i] for i in row_ids], row_scores, k) for row_scores, row_ids in zip(scores, ids)]


def _sharded(vectors: np.ndarray, docids: list[str], shards: int) -> ShardedDenseRetriever:
    ranges = shard_ranges(len(vectors), shards)
    return ShardedDenseRetriever(LocalShards([FlatShard(vectors[a:b], docids[a:b], a) for a, b in ranges]))


def _integer_vectors(n: int = 160, dim: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of small integers with many exact duplicates spread over the rows (and so over the
    shards): most queries have ties, many of them at the k-th place."""
    rng = np.random.default_rng(seed)
    vectors = rng.integers(-2, 3, size=(n, dim)).astype(np.float32)
    sources = [3, n // 3, 2 * n // 3]
    for src in sources:
        vectors[rng.choice(n, n // 12, replace=False)] = vectors[src]
    queries = rng.integers(-2, 3, size=(25, dim)).astype(np.float32)
    queries[:3] = vectors[sources]
    return vectors, queries


def test_exact_scores_are_fsum_rounded_and_independent_of_position():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 37)).astype(np.float32)
    q = rng.standard_normal(37).astype(np.float32)
    got = exact_scores(q, x)
    assert got.dtype == np.float32
    fsum = np.array([math.fsum(float(a) * float(b) for a, b in zip(row, q)) for row in x])
    assert np.all(np.abs(got.astype(np.float64) - fsum) <= np.abs(fsum) * 2.0 ** -23 + 1e-12)
    # a row scores the same bits wherever it sits and whatever it is computed with
    assert np.array_equal(exact_scores(q, x[7:8]), got[7:8])
    assert np.array_equal(exact_scores(q, x[::-1])[::-1], got)
    ints = rng.integers(-3, 4, size=(20, 9)).astype(np.float32)
    assert np.array_equal(exact_scores(ints[0], ints), (ints.astype(np.int64) @ ints[0].astype(np.int64)).astype(np.float32))


def test_shard_ranges_tile_the_rows():
    assert shard_ranges(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert shard_ranges(4, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert shard_ranges(7, 1) == [(0, 7)]
    with pytest.raises(ValueError, match="cannot split 3 documents into 4 shards"):
        shard_ranges(3, 4)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="shards must be a positive integer"):
            shard_ranges(10, bad)


@pytest.mark.parametrize("shards", [1, 2, 3, 4])
def test_merge_equals_unsharded_faiss_flat_with_ties(shards):
    vectors, queries = _integer_vectors()
    docids = _docids(len(vectors))
    retriever = _sharded(vectors, docids, shards)
    shard_rows = len(vectors) // shards
    tied_at_k = 0
    for k in (1, 7, 30, shard_rows + 5, len(vectors), len(vectors) + 9):  # k above a shard's rows, above the index
        want = _faiss_oracle(vectors, docids, queries, k)
        got = retriever.search_vectors(queries, k)
        for (gi, gs), (wi, ws) in zip(got, want):
            assert gi == wi
            assert gs.dtype == np.float32 and np.array_equal(gs, ws)
            tied_at_k += k < len(vectors) and ws[-1] == _faiss_oracle(vectors, docids, queries[:1], k + 1)[0][1][-1]
    assert tied_at_k  # the cases include ties across the k-th place


def test_ties_beyond_the_first_fetch_are_all_considered():
    """200 identical vectors in one shard and k=3: the shard must widen its FAISS search to all 200 to
    find the three largest doc ids (FAISS alone returns three by position)."""
    import faiss

    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((400, 8)).astype(np.float32) * 0.01
    vectors[100:300] = 1.0
    docids = [f"x{i:04d}" for i in range(400)]  # in the tied block the ids rise with the row
    query = np.ones((1, 8), np.float32)
    index = faiss.IndexFlatIP(8)
    index.add(vectors)
    _, faiss_ids = index.search(query, 3)
    want = sorted(docids[100:300], reverse=True)[:3]
    assert [docids[i] for i in faiss_ids[0]] != want  # FAISS's own tie order is not trec_eval's
    for shards in (1, 2, 3):
        (ids, scores), = _sharded(vectors, docids, shards).search_vectors(query, 3)
        assert ids == want and np.all(scores == np.float32(8.0))


@pytest.mark.parametrize("shards", [1, 2, 3, 4])
def test_float_vectors_equal_a_brute_force_scan(shards):
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((240, 24)).astype(np.float32)
    vectors[rng.choice(240, 10, replace=False)] = vectors[5]  # exact duplicates
    vectors[200] = np.nextafter(vectors[5], np.float32(np.inf))  # a near-duplicate (one ulp apart per entry)
    queries = rng.standard_normal((40, 24)).astype(np.float32)
    queries[0] = vectors[5]
    docids = _docids(240, seed=4)
    retriever = _sharded(vectors, docids, shards)
    import faiss

    index = faiss.IndexFlatIP(24)
    index.add(vectors)
    faiss_scores, faiss_ids = index.search(queries, len(vectors))
    checked = 0
    for k in (1, 10, 75):
        got = retriever.search_vectors(queries, k)
        for q, (ids, scores) in enumerate(got):
            full_ids, full = _trec_topk(docids, exact_scores(queries[q], vectors), len(vectors))
            assert ids == full_ids[:k] and np.array_equal(scores, full[:k])
            # FAISS's float32 sums agree to within rounding, and on the documents wherever scores are apart
            assert np.allclose(scores, faiss_scores[q, :k], rtol=0, atol=1e-5)
            gaps = np.abs(np.diff(full.astype(np.float64)))
            alone = [j for j in range(k) if (j == 0 or gaps[j - 1] > 1e-4) and gaps[j] > 1e-4]
            assert [ids[j] for j in alone] == [docids[faiss_ids[q, j]] for j in alone]
            checked += len(alone)
    assert checked > 40 * 75 // 2


def _faiss_scores_of(index, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The scores the whole index's FAISS search gives `rows` (per query) when it searches everything."""
    scores, ids = index.search(queries, index.ntotal)
    where = np.argsort(ids, axis=1)
    return np.take_along_axis(np.take_along_axis(scores, where, axis=1), rows, axis=1)


def test_large_batches_on_faiss_blas_path_stay_exact():
    """340 queries of 384 dimensions: FAISS sums with BLAS in 1024-row blocks (a shard's blocks start
    elsewhere than the whole index's, so its float32 sums differ in the last bit, as checked); the shards' top k
    still equals the brute-force scan, bit for bit."""
    import faiss

    rng = np.random.default_rng(8)
    vectors = rng.standard_normal((3000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.standard_normal((340, 384)).astype(np.float32)
    assert len(queries) * 384 >= faiss.cvar.distance_compute_blas_threshold  # the BLAS path
    whole, middle = faiss.IndexFlatIP(384), faiss.IndexFlatIP(384)
    whole.add(vectors)
    middle.add(vectors[1000:2000])  # shard 2 of 3
    assert not np.array_equal(middle.search(queries, 5)[0], _faiss_scores_of(whole, queries, middle.search(queries, 5)[1] + 1000))
    docids = _docids(3000, seed=9)
    got = _sharded(vectors, docids, 3).search_vectors(queries, 10)
    for q in range(0, 340, 17):
        ids, scores = _trec_topk(docids, exact_scores(queries[q], vectors), 10)
        assert got[q][0] == ids and np.array_equal(got[q][1], scores)


def test_merge_topk_orders_as_trec_eval():
    parts = [(["b", "a"], np.array([2.0, 1.0], np.float32)), (["c", "d"], np.array([2.0, 1.0], np.float32))]
    ids, scores = merge_topk(parts, 3)
    assert ids == ["c", "b", "d"] and scores.tolist() == [2.0, 2.0, 1.0]
    assert merge_topk([([], np.empty(0, np.float32))], 5)[0] == []


def _vector_folder(tmp_path, n=45, dim=6, shard_size=7):
    vectors, _ = _integer_vectors(n, dim, seed=5)
    docids = _docids(n, seed=6)
    folder = tmp_path / "vectors"
    write_vector_index(folder, vectors, docids, shard_size=shard_size, texts=[f"text of {d}" for d in docids])
    return folder, vectors, docids


def test_folder_shards_read_the_verified_embedding_files(tmp_path):
    folder, vectors, docids = _vector_folder(tmp_path)
    rng = np.random.default_rng(7)
    queries = rng.integers(-2, 3, size=(9, 6)).astype(np.float32)
    for shards in (1, 2, 3, 4):  # boundaries fall inside the 7-row embedding files
        retriever = open_sharded_retriever(folder, shards)
        assert [s["rows"] for s in retriever.info()] == [b - a for a, b in shard_ranges(45, shards)]
        for k in (3, 20):
            assert [(i, s.tolist()) for i, s in retriever.search_vectors(queries, k)] == \
                   [(i, s.tolist()) for i, s in _faiss_oracle(vectors, docids, queries, k)]
    shard = load_flat_shard(folder, 10, 30)
    assert shard.docids == docids[10:30] and np.array_equal(shard.vectors, vectors[10:30])
    files = shard_files(folder, 3)  # rows 0..14, 15..29, 30..44 over files of 7 rows
    npy = [[f.split("/")[-1] for f in part[2:]] for part in files]
    assert npy == [["000000000000.npy", "000000000007.npy", "000000000014.npy"],
                   ["000000000014.npy", "000000000021.npy", "000000000028.npy"],
                   ["000000000028.npy", "000000000035.npy", "000000000042.npy"]]
    assert all(part[:2] == ["manifest.json", "docs-1.sqlite"] for part in files)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_embedding_file_is_refused_naming_it(tmp_path, damage):
    folder, _, _ = _vector_folder(tmp_path)
    target = folder / "dense-shards" / "000000000014.npy"  # rows 14..20: shard 2 of 3
    if damage == "flip":
        data = bytearray(target.read_bytes())
        data[-3] ^= 0x01
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-8])
    else:
        target.unlink()
    problem = "missing" if damage == "delete" else "checksum mismatch"
    with pytest.raises(ValueError, match=f"{target}: {problem}") as err:
        open_sharded_retriever(folder, 3)
    assert "--repair" in str(err.value)
    load_flat_shard(folder, 0, 14)  # a shard that does not read the file opens
    with pytest.raises(ValueError, match=problem):
        load_flat_shard(folder, 13, 15)


def test_a_damaged_docstore_is_refused_naming_it(tmp_path):
    folder, _, _ = _vector_folder(tmp_path)
    store = folder / "docs-1.sqlite"
    store.write_bytes(store.read_bytes() + b"x")
    with pytest.raises(ValueError, match=f"{store}: checksum mismatch"):
        open_sharded_retriever(folder, 2)


def test_bad_input_gives_one_clear_error(tmp_path):
    folder, _, _ = _vector_folder(tmp_path)
    with pytest.raises(ValueError, match="cannot split 45 documents into 46 shards"):
        open_sharded_retriever(folder, 46)
    with pytest.raises(ValueError, match="placement must be one of local, ray"):
        open_sharded_retriever(folder, 2, placement="cloud")
    retriever = open_sharded_retriever(folder, 2)
    with pytest.raises(ValueError, match=r"shape \(n, 6\)"):
        retriever.search_vectors(np.zeros((2, 5), np.float32), 3)
    with pytest.raises(ValueError, match="query 2: the vector holds NaN"):
        retriever.search_vectors(np.array([[0] * 6, [np.nan] * 6], np.float32), 3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        retriever.search_vectors(np.zeros((1, 6), np.float32), 0)
    with pytest.raises(ValueError, match="without an encoder: use search_vectors"):
        retriever.search_batch([Query("q", "text")], 3)
    with pytest.raises(ValueError, match="shard rows 0..1: the vectors hold NaN"):
        FlatShard(np.full((2, 3), np.nan, np.float32), ["a", "b"])
    manifest = folder / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"factory": "Flat"', '"factory": "HNSW32,Flat"'))
    with pytest.raises(ValueError, match=r"covers flat indexes \(exact\) and IVF-PQ indexes \(IVFnlist,PQm\) only; this index is 'flat' \(HNSW32,Flat\)"):
        open_sharded_retriever(folder, 2)
    with pytest.raises(ValueError, match="already holds an index"):
        write_vector_index(folder, np.zeros((2, 2), np.float32), ["a", "b"])


def test_real_index_sharded_equals_the_dense_retriever(tiny_encoder, tmp_path):
    corpus = write_beir_corpus(tmp_path / "corpus.jsonl", DOCS_A + DOCS_B)
    folder = tmp_path / "index"
    build_index([corpus], folder, BuildOptions(dense=True, bm25=False, encoder=tiny_encoder, progress=False, shard_size=3))
    queries = [Query("q1", "red apples in autumn"), Query("q2", "lemon juice vitamin"), Query("q3", "lazy dog")]
    dense = open_retriever(folder, "dense", encoder=tiny_encoder)
    want = dense.search_batch(queries, 8)
    for shards in (1, 3):
        sharded = open_sharded_retriever(folder, shards, encoder=tiny_encoder)
        got = sharded.search_batch(queries, 8)
        assert [[h.docid for h in hits] for hits in got] == [[h.docid for h in hits] for hits in want]
        assert np.allclose([[h.score for h in hits] for hits in got], [[h.score for h in hits] for hits in want], atol=1e-6)
        assert [[(h.text, h.title) for h in hits] for hits in got] == [[(h.text, h.title) for h in hits] for hits in want]
        copy = pickle.loads(pickle.dumps(sharded))  # reopens its shards from the folder
        assert copy.search_batch(queries, 8) == got


# -- IVF-PQ ---------------------------------------------------------------------------------------------

def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, dim)).astype(np.float32)
    return (centers[rng.integers(0, 20, n)] + 0.5 * rng.standard_normal((n, dim))).astype(np.float32)


@pytest.fixture(scope="module")
def ivfpq():
    """2,000 clustered 8-d vectors (with exact duplicates spread over the rows), doc ids not in row order,
    an IVF16,PQ8x4 index trained on them and 30 queries."""
    import faiss

    vectors = _clustered(2000, 8, seed=10)
    rng = np.random.default_rng(11)
    vectors[rng.choice(2000, 40, replace=False)] = vectors[17]  # same list, same code, same score: ties
    index = faiss.index_factory(8, "IVF16,PQ8x4", faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.add(vectors)
    queries = _clustered(30, 8, seed=12)
    queries[0] = vectors[17]
    return vectors, _docids(2000, seed=13), index, queries


def _ivf_shards(index, docids, shards: int, nprobe: int) -> ShardedDenseRetriever:
    import faiss

    parts = [IVFPQShard(faiss.clone_index(index), docids[a:b], a, b) for a, b in shard_ranges(len(docids), shards)]
    return ShardedDenseRetriever(LocalShards(parts), probes=IVFProbes(index.quantizer.reconstruct_n(0, index.nlist), nprobe))


def _ivf_oracle(index, docids, queries, k: int, nprobe: int):
    """The whole IVF-PQ index's own search over every candidate of the probed lists, in trec_eval order, cut at k."""
    import faiss

    scores, ids = index.search(queries, index.ntotal, params=faiss.SearchParametersIVF(nprobe=nprobe))
    out = []
    for row_scores, row_ids in zip(scores, ids):
        found = row_ids >= 0
        out.append(_trec_topk([docids[i] for i in row_ids[found]], row_scores[found], k))
    return out


def _codes_by_row(index) -> tuple[np.ndarray, np.ndarray]:
    """(list number, code) of every row an IVF index holds, by row id (rows it does not hold: list -1)."""
    import faiss

    lists = np.full(len(np.arange(2000)), -1)
    codes = np.zeros((2000, index.code_size), np.uint8)
    for lst in range(index.nlist):
        n = index.invlists.list_size(lst)
        if n:
            ids = faiss.rev_swig_ptr(index.invlists.get_ids(lst), n).copy()
            lists[ids] = lst
            codes[ids] = faiss.rev_swig_ptr(index.invlists.get_codes(lst), n * index.code_size).reshape(n, -1)
    return lists, codes


@pytest.mark.parametrize("shards", [1, 2, 3, 4])
def test_ivfpq_shards_equal_the_whole_index_bit_for_bit(ivfpq, shards):
    vectors, docids, index, queries = ivfpq
    copies = {docids[i] for i in np.nonzero((vectors == vectors[17]).all(axis=1))[0]}
    for nprobe in (1, 3, 16):
        ranking = _ivf_oracle(index, docids, queries[:1], 3000, nprobe)[0][0]
        first = min(ranking.index(d) for d in copies)  # where query 0's 41 tied copies begin in its ranking
        retriever = _ivf_shards(index, docids, shards, nprobe)
        for k in (1, 10, first + 20, 3000):  # first + 20: the cut falls inside the ties; 3000: above any candidate count
            got = retriever.search_vectors(queries, k)
            for (gi, gs), (wi, ws) in zip(got, _ivf_oracle(index, docids, queries, k, nprobe)):
                assert gi == wi
                assert gs.dtype == np.float32 and np.array_equal(gs, ws)
        assert set(got[0][0][first : first + 41]) == copies and len(set(got[0][1][first : first + 41].tolist())) == 1
        assert got[0][0][first : first + 41] == sorted(copies, reverse=True)  # ties by doc id, descending


def test_ivfpq_shards_hold_the_whole_index_codes_of_their_rows(ivfpq):
    import faiss

    vectors, docids, index, _ = ivfpq
    lists, codes = _codes_by_row(index)
    for a, b in shard_ranges(2000, 3):
        shard = IVFPQShard(faiss.clone_index(index), docids[a:b], a, b)
        got_lists, got_codes = _codes_by_row(shard.ivf)
        assert shard.rows == b - a and shard.ivf.ntotal == b - a
        assert np.array_equal(got_lists[a:b], lists[a:b]) and (np.delete(got_lists, np.arange(a, b)) == -1).all()
        assert np.array_equal(got_codes[a:b], codes[a:b])
        assert shard.nbytes() == (b - a) * (4 + 8) + 16 * 8 * 4 + 8 * 16 * 1 * 4  # codes + ids, centroids, PQ centroids
    assert index.ntotal == 2000  # the whole index was cloned, not taken apart


def test_ivfpq_recall_at_10_against_a_brute_force_scan(ivfpq):
    """recall@10 of the sharded IVF-PQ search against the exact top 10 by numpy (float64 inner products):
    the same as the whole index's, and rising with nprobe."""
    vectors, docids, index, queries = ivfpq
    exact = np.argsort(-(queries.astype(np.float64) @ vectors.T.astype(np.float64)), axis=1, kind="stable")[:, :10]
    recall = {}
    for nprobe in (1, 16):
        got = _ivf_shards(index, docids, 3, nprobe).search_vectors(queries, 10)
        want = _ivf_oracle(index, docids, queries, 10, nprobe)
        recall[nprobe] = np.mean([len(set(ids) & {docids[i] for i in row}) / 10 for (ids, _), row in zip(got, exact)])
        assert recall[nprobe] == np.mean([len(set(ids) & {docids[i] for i in row}) / 10 for (ids, _), row in zip(want, exact)])
    assert 0.3 < recall[1] < recall[16]


def test_ivfpq_index_folder_shards(ivfpq, tmp_path):
    import faiss

    vectors, docids, index, queries = ivfpq
    folder = tmp_path / "ivfpq"
    write_vector_index(folder, vectors, docids, shard_size=500, index=faiss.clone_index(index))
    assert shard_files(folder, 2) == [["manifest.json", "docs-1.sqlite", "dense-1.faiss"]] * 2
    for shards in (1, 3):
        retriever = open_sharded_retriever(folder, shards, nprobe=3)
        assert [s["rows"] for s in retriever.info()] == [b - a for a, b in shard_ranges(2000, shards)]
        got = retriever.search_vectors(queries, 10)
        assert [(i, s.tolist()) for i, s in got] == [(i, s.tolist()) for i, s in _ivf_oracle(index, docids, queries, 10, 3)]
        copy = pickle.loads(pickle.dumps(retriever))  # reopens its shards with the same nprobe
        assert [(i, s.tolist()) for i, s in copy.search_vectors(queries, 10)] == [(i, s.tolist()) for i, s in got]
    with pytest.raises(ValueError, match="nprobe must be a positive integer"):
        open_sharded_retriever(folder, 2, nprobe=0)
    manifest = folder / "manifest.json"  # a factory string without polysemous training ("np") is IVF-PQ too
    manifest.write_text(manifest.read_text().replace('"factory": "IVF16,PQ8x4"', '"factory": "IVF16,PQ8x4np"'))
    assert open_sharded_retriever(folder, 2, nprobe=3).search_vectors(queries[:3], 5)[0][0] == _ivf_oracle(index, docids, queries[:1], 5, 3)[0][0]
    target = folder / "dense-1.faiss"
    target.write_bytes(target.read_bytes()[:-8])
    with pytest.raises(ValueError, match=f"{target}: checksum mismatch"):
        open_sharded_retriever(folder, 2)


def test_ivfpq_bad_input_gives_one_clear_error(ivfpq):
    import faiss

    vectors, docids, index, queries = ivfpq
    shard = IVFPQShard(faiss.clone_index(index), docids[:100], 0, 100)
    with pytest.raises(ValueError, match="needs the probed lists"):
        LocalShards([shard]).search(queries, 3)
    with pytest.raises(ValueError, match=r"probes must be one row of list numbers in -1..15 per query"):
        shard.search(queries, 3, np.full((len(queries), 2), 16))
    with pytest.raises(ValueError, match=r"shape \(n, 8\)"):
        IVFProbes(index.quantizer.reconstruct_n(0, 16), 2)(np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match="nprobe must be a positive integer"):
        IVFProbes(index.quantizer.reconstruct_n(0, 16), 0)
    with pytest.raises(ValueError, match="one doc id per row of 0..99"):
        IVFPQShard(faiss.clone_index(index), docids[:99], 0, 100)
    with pytest.raises(ValueError, match="expected a FAISS IVF-PQ index"):
        IVFPQShard(faiss.IndexFlatIP(8), docids[:10], 0, 10)
    with pytest.raises(ValueError, match="index holds 2000 vectors of 8 dimensions"):
        write_vector_index("/nonexistent-never-written", vectors[:10], docids[:10], index=faiss.clone_index(index))


@pytest.mark.ray
def test_ivfpq_shards_on_ray_actors_equal_the_whole_index(ivfpq, ray_session, tmp_path):
    import faiss

    vectors, docids, index, queries = ivfpq
    folder = tmp_path / "ivfpq"
    write_vector_index(folder, vectors, docids, shard_size=500, index=faiss.clone_index(index))
    retriever = open_sharded_retriever(folder, 3, placement="ray", nprobe=3)
    try:
        assert len({s["pid"] for s in retriever.info()}) == 3  # one actor each
        got = retriever.search_vectors(queries, 10)
        assert [(i, s.tolist()) for i, s in got] == [(i, s.tolist()) for i, s in _ivf_oracle(index, docids, queries, 10, 3)]
    finally:
        retriever.close()
