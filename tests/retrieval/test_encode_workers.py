"""Distributed dense encoding (issue 17): `rankline index --workers N` builds the index one process
builds (the same shard files, embeddings within 1e-6, the same search results), survives a worker
killed mid-shard by encoding only that shard again, resumes an interrupted driver from the shards it
wrote, and refuses bad options before anything is written; the pool hands the shard of an actor out
of restarts to another one.

Encodes are counted through files written by a test worker (a subclass of the pool's actor, sent to
Ray by value): one file per encoded shard, named by the shard's first document and the process.
Starting an actor that loads a real encoder costs ~13 CPU seconds (importing sentence-transformers),
so the builds use few actors; the pool's scheduling is tested with a stand-in encoder."""
from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from rankline.formats import Query
from rankline.pipelines.cli import main
from rankline.retrieval import BuildOptions, build_index, open_retriever
from rankline.retrieval import encode_pool
from rankline.retrieval.encoder import load_encoder
from rankline.retrieval.manifest import Manifest

from .conftest import write_beir_corpus

pytestmark = pytest.mark.ray

WORDS = "apple banana cherry grape lemon orange pear plum fig kiwi mango melon".split()
# 10 documents whose titles are their positions ("d03"), so a worker knows which shard it encodes
DOCS = [(f"doc{i}", f"d{i:02d}", " ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 3 + i % 5))) for i in range(10)]
SHARD_SIZE, BATCH_SIZE = 3, 2  # shards start at 0, 3, 6, 9; two batches per full shard
STARTS = [0, 3, 6, 9]


class Interrupted(BaseException):
    pass


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_beir_corpus(tmp_path / "c" / "corpus.jsonl", DOCS)


def _options(tiny_encoder, **kw) -> BuildOptions:
    return BuildOptions(dense=True, bm25=False, encoder=tiny_encoder, shard_size=SHARD_SIZE, batch_size=BATCH_SIZE,
                        progress=False, **kw)


class StandInEncoder:
    """Embeddings that a text determines ([length, sum of its code points]): the pool's scheduling
    without the cost of loading a model in every actor."""

    def encode_documents(self, texts, *, batch_size, normalize, progress=None):
        return np.array([[len(t), sum(map(ord, t))] for t in texts], dtype=np.float32)


def _logging_worker(log: Path, crash_at: int | None = None, crash_once: bool = True, stand_in: bool = False):
    """A pool actor that leaves a file in `log` for every shard it encodes and, at the shard starting at
    `crash_at`, ends its process (the first time only, with `crash_once`; a marker file remembers it).
    With `stand_in` it encodes with a StandInEncoder instead of loading the encoder."""
    log.mkdir(parents=True, exist_ok=True)
    marker = log.parent / (log.name + ".crashed")

    class LoggingWorker(encode_pool.EncodeWorker):
        if stand_in:
            def __init__(self, *args):
                self._cpu_at_start = encode_pool.cpu_seconds()
                self.encoder = StandInEncoder()

        def encode(self, texts, batch_size, normalize):
            start = int(texts[0].split()[0][1:])  # "d03 ..." -> 3
            (log / f"{start}-{os.getpid()}-{uuid.uuid4().hex}").touch()
            if start == crash_at and not (crash_once and marker.exists()):
                marker.touch()
                os._exit(1)
            return super().encode(texts, batch_size, normalize)

    return LoggingWorker


def _encoded(log: Path) -> dict[int, list[int]]:
    """{shard start: [pid of each encode]}."""
    out: dict[int, list[int]] = {}
    for path in log.iterdir():
        start, pid, _ = path.name.split("-")
        out.setdefault(int(start), []).append(int(pid))
    return out


def _embeddings(folder: Path) -> np.ndarray:
    manifest = Manifest.read(folder)
    manifest.verify(folder)
    return np.concatenate([np.load(folder / s["file"]) for s in manifest.shards()])


def _shards(folder: Path) -> list[tuple]:
    return [(s["file"], s["start"], s["rows"], s["batch_size"]) for s in Manifest.read(folder).shards()]


def _hits(folder: Path) -> list[list[tuple[str, float]]]:
    retriever = open_retriever(folder, "dense")
    return [[(h.docid, h.score) for h in retriever.search(Query("q", text), 10)] for text in ("apple pear", "kiwi mango melon")]


def _same_index(folder: Path, reference: Path) -> None:
    assert _shards(folder) == _shards(reference) == [(f"dense-shards/{s:012d}.npy", s, min(3, 10 - s), 2) for s in STARTS]
    dense, ref = Manifest.read(folder).dense, Manifest.read(reference).dense
    assert {k: v for k, v in dense.items() if k not in ("shards", "file")} == {k: v for k, v in ref.items() if k not in ("shards", "file")}
    np.testing.assert_allclose(_embeddings(folder), _embeddings(reference), rtol=0, atol=1e-6)
    for hits, ref_hits in zip(_hits(folder), _hits(reference)):
        assert [d for d, _ in hits] == [d for d, _ in ref_hits]
        np.testing.assert_allclose([s for _, s in hits], [s for _, s in ref_hits], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def reference(tiny_encoder, tmp_path_factory) -> Path:
    """The index of DOCS built in this process (`--workers 1`)."""
    root = tmp_path_factory.mktemp("reference")
    corpus = write_beir_corpus(root / "corpus.jsonl", DOCS)
    assert main(["index", str(corpus), "--out", str(root / "idx"), "--dense", "--encoder", tiny_encoder,
                 "--shard-size", str(SHARD_SIZE), "--batch-size", str(BATCH_SIZE), "--workers", "1"]) == 0
    return root / "idx"


def test_two_workers_build_the_index_one_process_builds_and_a_killed_one_costs_only_its_shard(
        ray_session, tiny_encoder, corpus, reference, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(encode_pool, "EncodeWorker", _logging_worker(tmp_path / "log", crash_at=3))
    out = tmp_path / "idx"
    assert main(["index", str(corpus), "--out", str(out), "--dense", "--encoder", tiny_encoder,
                 "--shard-size", str(SHARD_SIZE), "--batch-size", str(BATCH_SIZE), "--workers", "2"]) == 0
    assert "10 documents, 10 added; built dense" in capsys.readouterr().out
    encoded = _encoded(tmp_path / "log")
    assert {s: len(p) for s, p in encoded.items()} == {0: 1, 3: 2, 6: 1, 9: 1}  # the killed shard twice, no other
    assert encoded[3][0] != encoded[3][1]  # encoded again by the restarted actor, a new process
    assert len({pid for pids in encoded.values() for pid in pids} - {os.getpid()}) == 3  # two actors, one restarted
    _same_index(out, reference)
    assert ray_session.is_initialized()  # the command joined the session's Ray and left it running


@pytest.fixture
def stand_in_by_value(ray_session):
    """StandInEncoder goes to Ray by value: the workers cannot import this test module."""
    from ray import cloudpickle

    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


def test_an_actor_out_of_restarts_hands_its_shard_to_another(stand_in_by_value, tiny_encoder, tmp_path, monkeypatch):
    encoder = load_encoder(tiny_encoder)  # its name and weights travel to the actors, which stand in for it
    texts = {start: [f"{title} {text}" for _, title, text in DOCS[start : start + SHARD_SIZE]] for start in STARTS}
    jobs = [(s, len(texts[s]), BATCH_SIZE) for s in STARTS]
    expected = {s: StandInEncoder().encode_documents(texts[s], batch_size=BATCH_SIZE, normalize=True) for s in STARTS}

    monkeypatch.setattr(encode_pool, "EncodeWorker", _logging_worker(tmp_path / "log", crash_at=6, stand_in=True))
    with encode_pool.EncodePool(encoder, workers=2, max_restarts=0) as pool:
        got = {job[0]: emb for job, emb in pool.encode(jobs, lambda s, rows: texts[s], True)}
        assert len(pool.actors) == 1 and len(pool.cpu_seconds) == 1
        work, process = pool.cpu_seconds[0]
        assert 0 <= work <= process
    assert sorted(got) == STARTS
    for start in STARTS:
        np.testing.assert_array_equal(got[start], expected[start])
    encoded = _encoded(tmp_path / "log")
    assert len(encoded[6]) == 2 and len(set(encoded[6])) == 2  # the dead actor's shard, done by the other one

    monkeypatch.setattr(encode_pool, "EncodeWorker", _logging_worker(tmp_path / "log2", crash_at=0, crash_once=False, stand_in=True))
    with encode_pool.EncodePool(encoder, workers=1, max_restarts=0) as pool:
        with pytest.raises(RuntimeError, match=r"every encode worker died, the last one while encoding documents 0\.\.2 .*"
                                               r"run the same command again to resume"):
            list(pool.encode(jobs, lambda s, rows: texts[s], True))


def test_an_interrupted_driver_resumes_with_workers(ray_session, tiny_encoder, corpus, reference, tmp_path, monkeypatch):
    from rankline.retrieval import build

    out = tmp_path / "idx"
    write_shard, written = build._write_shard, []

    def interrupt_after_three(work, state, start, *args):  # the resumed build starts one actor for the last
        if len(written) == 3:
            raise Interrupted
        written.append(start)
        write_shard(work, state, start, *args)

    monkeypatch.setattr(build, "_write_shard", interrupt_after_three)
    monkeypatch.setattr(encode_pool, "EncodeWorker", _logging_worker(tmp_path / "log1"))
    with pytest.raises(Interrupted):
        build_index([corpus], out, _options(tiny_encoder, workers=2))
    state = json.loads((out / ".build" / "state.json").read_text())
    assert sorted(map(int, state["shards"])) == sorted(written) and not (out / "manifest.json").exists()

    monkeypatch.setattr(build, "_write_shard", write_shard)
    monkeypatch.setattr(encode_pool, "EncodeWorker", _logging_worker(tmp_path / "log2"))
    with pytest.warns(UserWarning, match=r"1 shard\(s\) to encode: 1 of the 2 workers start"):
        report = build_index([corpus], out, _options(tiny_encoder, workers=2))
    assert report.resumed
    encoded = _encoded(tmp_path / "log2")
    assert list(encoded) == sorted(set(STARTS) - set(written)) and all(len(p) == 1 for p in encoded.values())
    _same_index(out, reference)


@pytest.mark.parametrize("extra, message", [
    (["--workers", "0"], "--workers must be a positive integer, got 0"),
    (["--workers", "2", "--bm25"], "with --bm25 only there is nothing to encode"),
    (["--workers", "2", "--gpus-per-worker", "-1"], "--gpus-per-worker must be a number >= 0, got -1.0"),
    (["--workers", "2", "--gpus-per-worker", "1", "--device", "cpu"], "leave out --device cpu"),
    (["--workers", "2", "--gpus-per-worker", "1"], "--workers 2 --gpus-per-worker 1: 2 actors need 2 GPU in all; "
                                                   "this Ray cluster has 0 "),
    (["--workers", "9"], "--workers 9 --gpus-per-worker 0: 9 actors need 9 CPU in all; this Ray cluster has 4 "),
])
def test_bad_worker_options_fail_before_anything_is_written(ray_session, tiny_encoder, corpus, tmp_path, capsys, extra, message):
    out = tmp_path / "idx"
    assert main(["index", str(corpus), "--out", str(out), "--encoder", tiny_encoder, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()
