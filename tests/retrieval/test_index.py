"""Index folders: round trip, corruption detection, resume, incremental add, index types, bad input.

A tiny random encoder keeps these fast; the oracle for dense search is numpy brute force over the
encoder's own embeddings."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rankline.formats import Doc, Query
from rankline.retrieval import BuildOptions, build_index, open_index, open_retriever
from rankline.retrieval.corpus import doc_contents
from rankline.retrieval.encoder import Encoder, load_encoder

from .conftest import DOCS_A, DOCS_B, write_beir_corpus


class Interrupted(Exception):
    """Stands in for a crash or Ctrl-C in the middle of a build."""


def _dense(tiny_encoder, **kw) -> BuildOptions:
    return BuildOptions(dense=True, bm25=False, encoder=tiny_encoder, progress=False, **kw)


def _brute_force(encoder: Encoder, docs, query: str, k: int) -> list[str]:
    emb = encoder.encode_documents([doc_contents(Doc(d, x, t)) for d, t, x in docs])
    scores = emb @ encoder.encode_queries([query])[0]
    order = np.argsort(-scores, kind="stable")[:k]
    return [docs[i][0] for i in order]


def test_round_trip(tiny_encoder, corpus_a, tmp_path):
    out = tmp_path / "idx"
    report = build_index([corpus_a], out, _dense(tiny_encoder, shard_size=4))
    assert (report.count, report.added, report.built) == (6, 6, ("dense",))
    manifest = open_index(out)
    assert manifest.count == 6 and manifest.bm25 is None
    assert manifest.dense["dim"] == 32 and manifest.dense["normalize"] and manifest.dense["factory"] == "Flat"
    assert manifest.dense["encoder_sha256"] == load_encoder(tiny_encoder).weights_sha256
    # the embeddings stay in the folder as checksummed shards, so a damaged one can be encoded again alone
    assert set(manifest.files) == {"docs-1.sqlite", "dense-1.faiss", "dense-shards/000000000000.npy", "dense-shards/000000000004.npy"}
    assert [(s["start"], s["rows"]) for s in manifest.shards()] == [(0, 4), (4, 2)]
    assert not (out / ".build").exists()

    retriever = open_retriever(out, "dense")
    encoder = load_encoder(tiny_encoder)
    for query in ("red apples in autumn", "citrus fruit from Spain"):
        hits = retriever.search(Query("q", query), 4)
        assert [h.docid for h in hits] == _brute_force(encoder, DOCS_A, query, 4)
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    first = {d: (t, x) for d, t, x in DOCS_A}
    hit = retriever.search(Query("q", "x"), 6)[0]
    assert (hit.title, hit.text) == first[hit.docid]
    # a document's own text is its nearest neighbour (cosine 1)
    top = retriever.search_batch([Query("q1", doc_contents(Doc("a3", DOCS_A[2][2], DOCS_A[2][1])))], 1)[0][0]
    assert top.docid == "a3" and top.score == pytest.approx(1.0, abs=1e-5)
    assert len(retriever.search(Query("q", "fruit"), 100)) == 6  # k larger than the corpus


def test_rebuild_is_a_no_op(tiny_encoder, corpus_a, tmp_path):
    build_index([corpus_a], tmp_path / "idx", _dense(tiny_encoder))
    report = build_index([corpus_a], tmp_path / "idx", _dense(tiny_encoder))
    assert report.built == () and report.count == 6


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_corruption_is_detected(tiny_encoder, corpus_a, tmp_path, damage):
    out = tmp_path / "idx"
    build_index([corpus_a], out, _dense(tiny_encoder))
    target = out / "dense-1.faiss"
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        target.write_bytes(data[:-5] + bytes([data[-5] ^ 1]) + data[-4:])
    else:
        target.unlink()
    with pytest.raises(ValueError, match="dense-1.faiss: (checksum mismatch|missing)"):
        open_retriever(out, "dense")


def test_corrupted_manifest_and_docstore(tiny_encoder, corpus_a, tmp_path):
    out = tmp_path / "idx"
    build_index([corpus_a], out, _dense(tiny_encoder))
    with open(out / "docs-1.sqlite", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ValueError, match="docs-1.sqlite: checksum mismatch"):
        open_index(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupted or unsupported manifest"):
        open_index(out)
    with pytest.raises(FileNotFoundError, match="not a rankline index"):
        open_index(tmp_path)


def test_encoder_mismatch_is_refused(tiny_encoder, corpus_a, tmp_path):
    out = tmp_path / "idx"
    build_index([corpus_a], out, _dense(tiny_encoder))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["dense"]["encoder_sha256"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="does not match the index's"):
        open_retriever(out, "dense")


def test_resume_after_interruption(tiny_encoder, corpus_a, tmp_path, monkeypatch):
    out = tmp_path / "idx"
    calls = []
    original = Encoder.encode_documents

    def encode(self, texts, crash_at=None, **kw):
        calls.append(len(texts))
        if len(calls) == crash_at:
            raise Interrupted
        return original(self, texts, **kw)

    monkeypatch.setattr(Encoder, "encode_documents", lambda self, texts, **kw: encode(self, texts, crash_at=2, **kw))
    with pytest.raises(Interrupted):
        build_index([corpus_a], out, _dense(tiny_encoder, shard_size=2))
    assert not (out / "manifest.json").exists()
    assert sorted(p.name for p in (out / ".build" / "dense-shards").iterdir()) == ["000000000000.npy"]

    calls.clear()
    monkeypatch.setattr(Encoder, "encode_documents", encode)
    report = build_index([corpus_a], out, _dense(tiny_encoder, shard_size=2))
    assert report.resumed and calls == [2, 2]  # the first shard was not encoded again
    monkeypatch.undo()
    fresh = tmp_path / "fresh"
    build_index([corpus_a], fresh, _dense(tiny_encoder, shard_size=2))
    for query in ("grapes and wine", "lazy dog"):
        resumed_hits = open_retriever(out, "dense").search(Query("q", query), 6)
        fresh_hits = open_retriever(fresh, "dense").search(Query("q", query), 6)
        assert [(h.docid, round(h.score, 5)) for h in resumed_hits] == [(h.docid, round(h.score, 5)) for h in fresh_hits]


def test_changed_plan_discards_stale_work(tiny_encoder, corpus_a, tmp_path, monkeypatch):
    out = tmp_path / "idx"
    monkeypatch.setattr(Encoder, "encode_documents", lambda *a, **k: (_ for _ in ()).throw(Interrupted()))
    with pytest.raises(Interrupted):
        build_index([corpus_a], out, _dense(tiny_encoder, shard_size=2))
    monkeypatch.undo()
    report = build_index([corpus_a], out, _dense(tiny_encoder, shard_size=3))
    assert not report.resumed and report.count == 6


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivfpq", "IVF2,Flat"])
def test_incremental_add(tiny_encoder, corpus_a, corpus_b, tmp_path, index_type):
    out = tmp_path / "idx"
    build_index([corpus_a], out, _dense(tiny_encoder, index_type=index_type))
    with pytest.raises(ValueError, match="pass --add"):
        build_index([corpus_b], out, _dense(tiny_encoder))
    report = build_index([corpus_b], out, _dense(tiny_encoder), add=True)
    assert (report.count, report.added) == (8, 2)
    manifest = open_index(out)
    assert manifest.generation == 2 and [s["count"] for s in manifest.sources] == [6, 2]
    assert sorted(p.name for p in out.iterdir()) == ["dense-2.faiss", "dense-shards", "docs-2.sqlite", "manifest.json"]
    assert [(s["start"], s["rows"]) for s in manifest.shards()] == [(0, 6), (6, 2)]
    retriever = open_retriever(out, "dense", nprobe=8)
    encoder = load_encoder(tiny_encoder)
    if index_type == "ivfpq":  # lossy codes on a 6-document training set: only check everything is there
        assert {h.docid for h in retriever.search(Query("q", "fruit"), 8)} == {d for d, _, _ in DOCS_A + DOCS_B}
        return
    for d, t, x in DOCS_B:
        top = retriever.search(Query("q", doc_contents(Doc(d, x, t))), 1)[0]
        assert top.docid == d and (top.title, top.text) == (t, x)
    if index_type in ("flat", "IVF2,Flat"):  # exact once every list is probed
        query = "sour vitamin"
        assert [h.docid for h in retriever.search(Query("q", query), 8)] == _brute_force(encoder, DOCS_A + DOCS_B, query, 8)


def test_add_refuses_duplicate_ids(tiny_encoder, corpus_a, tmp_path):
    out = tmp_path / "idx"
    build_index([corpus_a], out, _dense(tiny_encoder))
    clash = write_beir_corpus(tmp_path / "clash.jsonl", [("z1", "", "new"), ("a2", "", "again")])
    with pytest.raises(ValueError, match="duplicate document id 'a2'"):
        build_index([clash], out, _dense(tiny_encoder), add=True)
    assert open_index(out).count == 6  # the index is unchanged


def test_bad_corpora(tiny_encoder, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such corpus"):
        build_index([tmp_path / "missing.jsonl"], tmp_path / "idx", _dense(tiny_encoder))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="holds no documents"):
        build_index([empty], tmp_path / "idx", _dense(tiny_encoder))
    dup = write_beir_corpus(tmp_path / "dup.jsonl", [("x", "", "one"), ("x", "", "two")])
    with pytest.raises(ValueError, match="duplicate document id 'x'"):
        build_index([dup], tmp_path / "idx2", _dense(tiny_encoder))
    with pytest.raises(ValueError, match="neither one of flat, hnsw, ivfpq nor a valid FAISS factory"):
        build_index([write_beir_corpus(tmp_path / "ok.jsonl", DOCS_A)], tmp_path / "idx3", _dense(tiny_encoder, index_type="nonsense"))


def test_retriever_argument_errors(tiny_encoder, corpus_a, tmp_path):
    out = tmp_path / "idx"
    build_index([corpus_a], out, _dense(tiny_encoder))
    with pytest.raises(ValueError, match="unknown retrieval method 'sparse'"):
        open_retriever(out, "sparse")
    with pytest.raises(ValueError, match="unknown option"):
        open_retriever(out, "dense", k1=0.9)
    with pytest.raises(ValueError, match="no BM25 part"):
        open_retriever(out, "bm25")
    retriever = open_retriever(out, "dense")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        retriever.search(Query("q", "x"), 0)


def test_named_ivfpq_skips_polysemous_training_and_searches_the_same():
    """--index-type ivfpq is IVF + PQ without polysemous training (it only reorders the PQ centroids for
    Hamming-distance search, which rankline never does, and took ~6x the PQ training at 1M vectors): the
    same hits and the same scores as the factory string with it."""
    import faiss

    from rankline.retrieval import faiss_index

    assert faiss_index.factory_string("ivfpq", 1_000_000, 384) == "IVF4000,PQ48x8np"  # 4*sqrt(n) lists, dim/8 sub-quantizers
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2000, 16)).astype(np.float32)
    queries = vectors[:20] + np.float32(0.1)
    results = []
    for spec in ("IVF8,PQ4x4", "IVF8,PQ4x4np"):
        index = faiss_index.build(vectors, spec)
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        assert ivf.do_polysemous_training == (not spec.endswith("np"))
        ivf.nprobe = 8
        results.append(index.search(queries, 10))
    (scores_p, ids_p), (scores_np, ids_np) = results
    np.testing.assert_array_equal(ids_np, ids_p)
    np.testing.assert_array_equal(scores_np, scores_p)
