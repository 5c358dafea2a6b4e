"""Index writes never build on damaged files (issue 19): `index` and `--add` verify the index first,
a resume verifies the work it reuses, `--repair` rebuilds only the damaged files and ends equal to a
clean build; options fail before any encoding and a failed build leaves nothing behind.

The oracle throughout is a clean build of the same corpora with the same options: its checksums and
its search results."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from rankline.formats import Query
from rankline.pipelines.cli import main
from rankline.retrieval import BuildOptions, build_index, open_index, open_retriever
from rankline.retrieval.encoder import Encoder
from rankline.retrieval.manifest import Manifest

from .conftest import write_beir_corpus

QUERIES = ("red apples in autumn", "lemon juice vitamin", "fruit trees in spring", "lazy dog")


class Interrupted(Exception):
    """Stands in for a crash or Ctrl-C in the middle of a build."""


def _both(tiny_encoder, **kw) -> BuildOptions:
    return BuildOptions(encoder=tiny_encoder, progress=False, shard_size=2, **kw)


def _dense(tiny_encoder, **kw) -> BuildOptions:
    return BuildOptions(dense=True, bm25=False, encoder=tiny_encoder, progress=False, shard_size=2, **kw)


def _flip(path, offset=-5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _results(folder, methods=("dense",)) -> dict:
    out = {}
    for method in methods:
        retriever = open_retriever(folder, method)
        out[method] = [[(h.docid, round(h.score, 5), h.title, h.text) for h in retriever.search(Query("q", q), 8)] for q in QUERIES]
    return out


def _count_encodes(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = Encoder.encode_documents

    def encode(self, texts, **kw):
        calls.append(len(texts))
        return original(self, texts, **kw)

    monkeypatch.setattr(Encoder, "encode_documents", encode)
    return calls


def _stat(folder) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


# --- finding 2: --add never extends a damaged index -------------------------------------------------

@pytest.mark.parametrize("target", ["docs-1.sqlite", "dense-1.faiss", "dense-shards/000000000002.npy", "bm25"])
def test_add_refuses_a_damaged_index(tiny_encoder, corpus_a, corpus_b, tmp_path, target, capsys):
    out = tmp_path / "idx"
    build_index([corpus_a], out, _both(tiny_encoder))
    path = next((out / "bm25-1").glob("*.si")) if target == "bm25" else out / target
    _flip(path)  # a flipped docstore byte, a corrupted vector, a damaged Lucene segment
    name = str(path.relative_to(out))
    manifest_before = (out / "manifest.json").read_bytes()
    with pytest.raises(ValueError, match=rf"{name}: checksum mismatch.*--repair"):
        build_index([corpus_b], out, _both(tiny_encoder), add=True)
    capsys.readouterr()
    assert main(["index", str(corpus_b), "--out", str(out), "--add", "--encoder", tiny_encoder]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0] and "--repair" in err[0]
    # nothing was laundered: same manifest, no new generation, and the damage is still reported
    assert (out / "manifest.json").read_bytes() == manifest_before and not (out / ".build").exists()
    with pytest.raises(ValueError, match=f"{name}: checksum mismatch"):
        open_index(out)


def test_add_checks_the_copy_it_builds_on(tiny_encoder, corpus_a, corpus_b, tmp_path, monkeypatch):
    """Damage that appears between the check and the copy (a bad read, a file changing under the run)
    is caught on the copy itself."""
    out = tmp_path / "idx"
    build_index([corpus_a], out, _dense(tiny_encoder))
    copyfile = shutil.copyfile

    def bad_copy(src, dst, **kw):
        copyfile(src, dst, **kw)
        _flip(dst)

    monkeypatch.setattr(shutil, "copyfile", bad_copy)
    with pytest.raises(ValueError, match="docs-1.sqlite: checksum mismatch"):
        build_index([corpus_b], out, _dense(tiny_encoder), add=True)
    monkeypatch.undo()
    assert open_index(out).generation == 1
    assert build_index([corpus_b], out, _dense(tiny_encoder), add=True).count == 8  # the index itself was fine


# --- finding 3: a damaged index is never "up to date" -----------------------------------------------

@pytest.mark.parametrize("target, damage", [("docs-1.sqlite", "flip"), ("dense-1.faiss", "delete"),
                                            ("dense-shards/000000000004.npy", "flip")])
def test_rerun_on_a_damaged_index_is_refused(tiny_encoder, corpus_a, tmp_path, capsys, target, damage):
    out = tmp_path / "idx"
    assert main(["index", str(corpus_a), "--out", str(out), "--encoder", tiny_encoder, "--shard-size", "2"]) == 0
    _flip(out / target, offset=-3) if damage == "flip" else (out / target).unlink()
    with pytest.raises(ValueError, match=f"{target}: (checksum mismatch|missing).*--repair"):
        build_index([corpus_a], out, _both(tiny_encoder))
    capsys.readouterr()
    assert main(["index", str(corpus_a), "--out", str(out), "--encoder", tiny_encoder]) == 2
    captured = capsys.readouterr()
    assert "up to date" not in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and target in err[0] and f"--out {out} --repair" in err[0]


# --- resume verifies the work it reuses --------------------------------------------------------------

def _interrupt_at(monkeypatch, call: int) -> None:
    original, calls = Encoder.encode_documents, []

    def encode(self, texts, **kw):
        calls.append(len(texts))
        if len(calls) == call:
            raise Interrupted
        return original(self, texts, **kw)

    monkeypatch.setattr(Encoder, "encode_documents", encode)


def test_resume_encodes_a_damaged_shard_again(tiny_encoder, corpus_a, tmp_path, monkeypatch):
    out, fresh = tmp_path / "idx", tmp_path / "fresh"
    build_index([corpus_a], fresh, _dense(tiny_encoder))
    _interrupt_at(monkeypatch, 3)
    with pytest.raises(Interrupted):
        build_index([corpus_a], out, _dense(tiny_encoder))
    monkeypatch.undo()
    shard = out / ".build" / "dense-shards" / "000000000000.npy"
    _flip(shard)  # same shape, one float changed: the old shape check let it through
    calls = _count_encodes(monkeypatch)
    report = build_index([corpus_a], out, _dense(tiny_encoder))
    assert report.resumed and calls == [2, 2]  # shard 0 again (damaged), shard 4 (never written); shard 2 reused
    assert open_index(out).files == open_index(fresh).files
    assert _results(out) == _results(fresh)


def test_resume_starts_afresh_on_a_damaged_work_docstore(tiny_encoder, corpus_a, tmp_path, monkeypatch):
    out, fresh = tmp_path / "idx", tmp_path / "fresh"
    build_index([corpus_a], fresh, _dense(tiny_encoder))
    _interrupt_at(monkeypatch, 2)
    with pytest.raises(Interrupted):
        build_index([corpus_a], out, _dense(tiny_encoder))
    monkeypatch.undo()
    _flip(out / ".build" / "docs.sqlite", offset=-3)
    report = build_index([corpus_a], out, _dense(tiny_encoder))
    assert not report.resumed
    assert open_index(out).files == open_index(fresh).files
    assert _results(out) == _results(fresh)


# --- --repair rebuilds only the damaged files ---------------------------------------------------------

def test_repair_encodes_only_the_damaged_shard(tiny_encoder, corpus_a, tmp_path, monkeypatch, capsys):
    out, clean = tmp_path / "idx", tmp_path / "clean"
    build_index([corpus_a], out, _dense(tiny_encoder))
    build_index([corpus_a], clean, _dense(tiny_encoder))
    damaged = out / "dense-shards" / "000000000002.npy"
    _flip(damaged)
    with pytest.raises(ValueError, match=r"000000000002.npy: checksum mismatch.*rankline index .* --repair"):
        open_retriever(out, "dense")  # search says how to repair
    before = _stat(out)
    calls = _count_encodes(monkeypatch)
    report = build_index([corpus_a], out, _dense(tiny_encoder), repair=True)
    assert calls == [2]  # the two documents of the damaged shard, nothing else
    assert report.repaired == ("dense-shards/000000000002.npy",) and report.built == ("dense shards",)
    after = _stat(out)
    for rel in ("docs-1.sqlite", "dense-1.faiss", "dense-shards/000000000000.npy", "dense-shards/000000000004.npy"):
        assert after[rel] == before[rel]  # the rest was left alone
    manifest = open_index(out)  # verifies
    assert manifest.files == open_index(clean).files  # byte-identical to a clean build
    assert _results(out) == _results(clean)
    # the CLI: nothing left to repair, and a rerun is up to date again
    assert main(["index", str(corpus_a), "--out", str(out), "--repair", "--encoder", tiny_encoder]) == 0
    assert "nothing to repair" in capsys.readouterr().out
    assert main(["index", str(corpus_a), "--out", str(out), "--encoder", tiny_encoder, "--dense"]) == 0
    assert "up to date" in capsys.readouterr().out


@pytest.mark.parametrize("targets, built, encodes", [
    (["docs-1.sqlite"], ("docstore",), []),
    (["dense-1.faiss"], ("dense",), []),  # rebuilt from the shards: no encoding
    (["dense-1.faiss", "dense-shards/000000000000.npy"], ("dense shards", "dense"), [2]),
    (["bm25"], ("bm25",), []),
    (["docs-1.sqlite", "dense-shards/000000000004.npy", "bm25"], ("docstore", "dense shards", "bm25"), [2]),
])
def test_repair_each_part(tiny_encoder, corpus_a, tmp_path, monkeypatch, targets, built, encodes):
    out, clean = tmp_path / "idx", tmp_path / "clean"
    build_index([corpus_a], out, _both(tiny_encoder))
    build_index([corpus_a], clean, _both(tiny_encoder))
    damaged = []
    for target in targets:
        path = next((out / "bm25-1").glob("*.si")) if target == "bm25" else out / target
        path.unlink() if target == "dense-1.faiss" else _flip(path, offset=-3)
        damaged.append(str(path.relative_to(out)))
    rebuilt_bm25 = any(d.startswith("bm25-") for d in damaged)
    kept = {rel: stat for rel, stat in _stat(out).items()
            if rel not in damaged and rel != "manifest.json" and not (rebuilt_bm25 and rel.startswith("bm25-"))}
    calls = _count_encodes(monkeypatch)
    report = build_index([corpus_a], out, _both(tiny_encoder), repair=True)
    assert calls == encodes and report.built == built and report.repaired == tuple(sorted(damaged))
    manifest, reference = open_index(out), open_index(clean)  # verifies
    assert manifest.generation == 2
    # the document store and the dense part, rebuilt or kept, equal the clean build's byte for byte
    # (Lucene writes segment ids and timestamps, so BM25 is compared by its search results)
    for part in ("docstore", "dense", "shard"):
        assert sorted(sha for rel, sha in manifest.files.items() if manifest.part_of(rel) == part) == \
            sorted(sha for rel, sha in reference.files.items() if reference.part_of(rel) == part)
    now = _stat(out)
    for rel, stat in kept.items():
        assert now.get(rel) == stat, f"{rel} was rewritten although it was not damaged"
    assert _results(out, ("dense", "bm25", "hybrid")) == _results(clean, ("dense", "bm25", "hybrid"))


def test_repair_after_add_equals_a_one_shot_build(tiny_encoder, corpus_a, corpus_b, tmp_path):
    out, whole = tmp_path / "idx", tmp_path / "whole"
    build_index([corpus_a], out, _dense(tiny_encoder))
    build_index([corpus_b], out, _dense(tiny_encoder), add=True)
    build_index([corpus_a, corpus_b], whole, _dense(tiny_encoder))
    (out / "dense-2.faiss").unlink()
    _flip(out / "dense-shards" / "000000000006.npy")  # the shard the add wrote
    report = build_index([corpus_a, corpus_b], out, _dense(tiny_encoder), repair=True)
    assert report.repaired == ("dense-2.faiss", "dense-shards/000000000006.npy")
    assert open_index(out).files["dense-3.faiss"] == open_index(whole).files["dense-1.faiss"]
    assert _results(out) == _results(whole)


def test_repair_an_index_built_before_shards_were_kept(tiny_encoder, corpus_a, tmp_path):
    """An index whose manifest lists no shards: a damaged FAISS file is rebuilt by encoding everything."""
    out, clean = tmp_path / "idx", tmp_path / "clean"
    build_index([corpus_a], out, _dense(tiny_encoder))
    build_index([corpus_a], clean, _dense(tiny_encoder))
    data = json.loads((out / "manifest.json").read_text())
    del data["dense"]["shards"], data["dense"]["shard_size"]
    data["files"] = {k: v for k, v in data["files"].items() if not k.startswith("dense-shards/")}
    (out / "manifest.json").write_text(json.dumps(data))
    shutil.rmtree(out / "dense-shards")
    _flip(out / "dense-1.faiss")
    report = build_index([corpus_a], out, _dense(tiny_encoder), repair=True)
    assert report.built == ("dense shards", "dense")
    assert open_index(out).files == {k.replace("dense-1", "dense-2"): v for k, v in open_index(clean).files.items()}
    assert _results(out) == _results(clean)


def test_an_interrupted_repair_resumes(tiny_encoder, corpus_a, tmp_path, monkeypatch):
    out, clean = tmp_path / "idx", tmp_path / "clean"
    build_index([corpus_a], out, _dense(tiny_encoder))
    build_index([corpus_a], clean, _dense(tiny_encoder))
    for start in (0, 4):
        _flip(out / "dense-shards" / f"{start:012d}.npy")
    _interrupt_at(monkeypatch, 2)
    with pytest.raises(Interrupted):
        build_index([corpus_a], out, _dense(tiny_encoder), repair=True)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="checksum mismatch"):
        open_index(out)  # still damaged until the repair commits
    calls = _count_encodes(monkeypatch)
    report = build_index([corpus_a], out, _dense(tiny_encoder), repair=True)
    assert report.resumed and calls == [2]  # the shard the first attempt finished is not encoded again
    assert open_index(out).files == open_index(clean).files


def test_a_kind_added_later_carries_the_other_over(tiny_encoder, corpus_a, tmp_path):
    out = tmp_path / "idx"
    build_index([corpus_a], out, _dense(tiny_encoder))
    dense_files = {k: v for k, v in open_index(out).files.items() if not k.startswith("docs-")}
    report = build_index([corpus_a], out, BuildOptions(dense=False, bm25=True, progress=False))
    assert report.built == ("bm25",)
    manifest = open_index(out)
    assert {k: v for k, v in manifest.files.items() if k in dense_files} == dense_files
    assert manifest.shards() == Manifest.read(out).shards() and len(manifest.shards()) == 3
    assert open_retriever(out, "hybrid").search(Query("q", "apples"), 3)


def test_repair_refusals(tiny_encoder, corpus_a, corpus_b, tmp_path, capsys):
    out = tmp_path / "idx"
    with pytest.raises(FileNotFoundError, match="no index to repair"):
        build_index([corpus_a], out, _dense(tiny_encoder), repair=True)
    build_index([corpus_a], out, _dense(tiny_encoder))
    with pytest.raises(ValueError, match="not a corpus of the index"):
        build_index([corpus_b], out, _dense(tiny_encoder), repair=True)
    _flip(out / "docs-1.sqlite", offset=-3)
    changed = write_beir_corpus(tmp_path / "a" / "corpus.jsonl", [("a1", "", "edited since it was indexed")])
    with pytest.raises(ValueError, match="not a corpus of the index"):
        build_index([changed], out, _dense(tiny_encoder), repair=True)
    with pytest.raises(SystemExit):  # argparse: not allowed together
        main(["index", str(corpus_b), "--out", str(out), "--add", "--repair"])
    with pytest.raises(ValueError, match="do not combine"):
        build_index([corpus_b], out, _dense(tiny_encoder), add=True, repair=True)
    (out / "manifest.json").write_text("{torn")
    with pytest.raises(ValueError, match="cannot be repaired"):
        build_index([corpus_a], out, _dense(tiny_encoder), repair=True)


# --- options are checked before any encoding; a failure leaves nothing behind -------------------------

@pytest.mark.parametrize("options, error, message", [
    ({"index_type": "bogus"}, ValueError, "neither one of flat, hnsw, ivfpq nor a valid FAISS factory"),
    ({"index_type": "IVF4096,Flat"}, ValueError, "needs at least 4096 documents to train"),
    ({"index_type": "IVF2,PQ4x8"}, ValueError, "needs at least 256 documents to train"),
    ({"encoder": "./no-such-encoder"}, FileNotFoundError, "encoder folder does not exist"),
    ({"batch_size": 0}, ValueError, "--batch-size must be a positive integer"),
    ({"shard_size": -1}, ValueError, "--shard-size must be a positive integer"),
    ({"threads": 0}, ValueError, "--threads must be a positive integer"),
    ({"device": "tpu"}, ValueError, "unknown --device 'tpu'"),
])
def test_bad_options_fail_before_encoding_and_leave_nothing(tiny_encoder, corpus_a, tmp_path, monkeypatch, options, error, message):
    monkeypatch.setattr(Encoder, "encode_documents", lambda *a, **k: pytest.fail("encoded before checking the options"))
    out = tmp_path / "idx"
    with pytest.raises(error, match=message):
        build_index([corpus_a], out, dataclasses.replace(_both(tiny_encoder), **options))
    assert not out.exists()


def test_cuda_without_cuda_is_one_line(corpus_a, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["index", str(corpus_a), "--out", str(tmp_path / "idx"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA is not available" in err[0]
    assert not (tmp_path / "idx").exists()


def test_cli_bad_index_type_is_one_line_before_encoding(tiny_encoder, corpus_a, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Encoder, "encode_documents", lambda *a, **k: pytest.fail("encoded before checking --index-type"))
    out = tmp_path / "idx"
    assert main(["index", str(corpus_a), "--out", str(out), "--encoder", tiny_encoder, "--index-type", "bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'bogus'" in err[0] and not out.exists()


def test_a_corpus_that_fails_to_load_leaves_nothing(tiny_encoder, corpus_a, tmp_path):
    dup = write_beir_corpus(tmp_path / "dup.jsonl", [("x", "", "one"), ("x", "", "two")])
    with pytest.raises(ValueError, match="duplicate document id 'x'"):
        build_index([dup], tmp_path / "new", _both(tiny_encoder))
    assert not (tmp_path / "new").exists()
    out = tmp_path / "idx"
    build_index([corpus_a], out, _dense(tiny_encoder))
    before = sorted(p.name for p in out.iterdir())
    clash = write_beir_corpus(tmp_path / "clash.jsonl", [("z1", "", "new"), ("a2", "", "again")])
    with pytest.raises(ValueError, match="duplicate document id 'a2'"):
        build_index([clash], out, _dense(tiny_encoder), add=True)
    assert sorted(p.name for p in out.iterdir()) == before  # no .build left behind
    open_index(out)


def test_an_interrupted_encoding_is_kept_for_the_rerun(tiny_encoder, corpus_a, tmp_path, monkeypatch):
    """The other side of 'leaves nothing': work that cost something (encoded shards) stays, resumable."""
    _interrupt_at(monkeypatch, 2)
    with pytest.raises(Interrupted):
        build_index([corpus_a], tmp_path / "idx", _dense(tiny_encoder))
    state = json.loads((tmp_path / "idx" / ".build" / "state.json").read_text())
    assert list(state["shards"]) == ["0"] and "dense-shards/000000000000.npy" in state["files"]


def test_manifest_part_of(tiny_encoder, corpus_a, tmp_path):
    build_index([corpus_a], tmp_path / "idx", _both(tiny_encoder))
    manifest = Manifest.read(tmp_path / "idx")
    parts = {manifest.part_of(rel) for rel in manifest.files}
    assert parts == {"docstore", "dense", "shard", "bm25"}


@pytest.mark.parametrize("tamper", [
    lambda m: m["dense"].pop("file"),
    lambda m: m.update(docstore="../elsewhere.sqlite"),
    lambda m: m["files"].pop("dense-shards/000000000002.npy"),
    lambda m: m["dense"]["shards"][1].update(start=1),
    lambda m: m["dense"]["shards"].append({"file": "dense-shards/000000000099.npy", "start": 99, "rows": 1}),
    lambda m: m.update(files=[]),
])
def test_an_inconsistent_manifest_is_one_clear_error(tiny_encoder, corpus_a, tmp_path, capsys, tamper):
    """A manifest that parses but does not hang together (hand-edited, or damaged in a way JSON
    survives) is refused by every command as corrupted, never a KeyError traceback or a path outside."""
    out = tmp_path / "idx"
    build_index([corpus_a], out, _dense(tiny_encoder))
    data = json.loads((out / "manifest.json").read_text())
    tamper(data)
    (out / "manifest.json").write_text(json.dumps(data))
    for argv in (["index", str(corpus_a), "--out", str(out), "--dense"], ["index", str(corpus_a), "--out", str(out), "--repair"],
                 ["search", str(out), "apples"]):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "manifest.json: corrupted or unsupported manifest" in err[0]
