"""`rankline label` end to end on the tiny Llama: qrels + distributions, cache reuse, the candidate
formats of `rankline rerank`, the old flag spellings, --device/--dtype, clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.fixture()
def inputs(tmp_path):
    (tmp_path / "topics.tsv").write_text("q1\twhat is a cat\nq2\tboiling point of water\n")
    (tmp_path / "run.trec").write_text(
        "q1 Q0 d1 1 3.0 t\nq1 Q0 d2 2 2.0 t\nq1 Q0 d3 3 1.0 t\nq2 Q0 d3 1 5.0 t\nq2 Q0 d1 2 4.0 t\n"
    )
    docs = {"d1": ("Cats", "A cat is a small mammal."), "d2": ("", "Markets fell."), "d3": ("Water", "Boils at 100 C.")}
    (tmp_path / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": t, "text": x}) + "\n" for k, (t, x) in docs.items())
    )
    return tmp_path


def _label(path, fixtures_dir, *extra, candidates=("--candidates", "run.trec"), top=("--top", "2")):
    from rankline.pipelines.cli import main

    flag, name = candidates
    argv = [flag, str(path / name)]
    if name.endswith(".trec"):
        argv += ["--topics", str(path / "topics.tsv"), "--corpus", str(path / "corpus.jsonl")]
    return main([
        "label", *argv, *top, "--out", str(path / "labels.qrels"),
        "--model", str(fixtures_dir / "first-parity" / "tiny-llama"), "--cache", str(path / "cache.sqlite"), *extra,
    ])


def test_label_writes_qrels_and_distributions(inputs, fixtures_dir, capsys):
    from rankline.formats import read_qrels
    from rankline.evaluation.label_dist import read_label_dist

    assert _label(inputs, fixtures_dir) == 0, capsys.readouterr().err
    dists = read_label_dist(inputs / "labels.qrels.dist")
    assert {q: sorted(d) for q, d in dists.items()} == {"q1": ["d1", "d2"], "q2": ["d1", "d3"]}  # top 2 only
    qrels = read_qrels(inputs / "labels.qrels")
    for qid, docs in dists.items():
        for docid, p in docs.items():
            assert qrels[qid][docid] == int(np.floor(p @ np.arange(4) + 0.5))
    # A rerun is served from the cache and gives the same file.
    before = (inputs / "labels.qrels.dist").read_text()
    assert _label(inputs, fixtures_dir, "--argmax") == 0
    assert (inputs / "labels.qrels.dist").read_text() == before
    argmax = read_qrels(inputs / "labels.qrels")
    assert all(argmax[q][d] == int(np.argmax(p)) for q, docs in dists.items() for d, p in docs.items())


def test_requests_jsonl_candidates_give_the_same_labels(inputs, fixtures_dir, capsys):
    """Any candidates file `rankline rerank` reads: here the requests jsonl of the same run."""
    from rankline.formats import read_candidates

    lists = read_candidates(inputs / "run.trec", topics=inputs / "topics.tsv", corpus=inputs / "corpus.jsonl")
    (inputs / "requests.jsonl").write_text("".join(json.dumps({
        "qid": c.query.qid, "query": c.query.text,
        "candidates": [{"docid": h.docid, "score": h.score, "title": h.title, "text": h.text} for h in c.hits],
    }) + "\n" for c in lists))
    assert _label(inputs, fixtures_dir) == 0
    want = (inputs / "labels.qrels.dist").read_text()
    (inputs / "labels.qrels.dist").unlink()
    assert _label(inputs, fixtures_dir, "--cache", str(inputs / "fresh.sqlite"),
                  candidates=("--candidates", "requests.jsonl")) == 0, capsys.readouterr().err
    assert (inputs / "labels.qrels.dist").read_text() == want


def test_old_spellings_run_and_depth_still_work_with_a_deprecation_line(inputs, fixtures_dir, capsys):
    assert _label(inputs, fixtures_dir) == 0
    want = (inputs / "labels.qrels.dist").read_text()
    capsys.readouterr()
    assert _label(inputs, fixtures_dir, candidates=("--run", "run.trec"), top=("--depth", "2")) == 0
    err = capsys.readouterr().err
    assert "rankline label: warning: --run is deprecated; use --candidates" in err
    assert "rankline label: warning: --depth is deprecated; use --top" in err
    assert (inputs / "labels.qrels.dist").read_text() == want


def test_device_and_dtype_reach_the_model(inputs, fixtures_dir, monkeypatch, capsys):
    from rankline.rerankers import models

    loaded = []
    real = models.load_causal_lm

    def recording(name, **kwargs):
        lm = real(name, **kwargs)
        loaded.append((kwargs, lm.model.dtype, lm.model.device.type))
        return lm

    monkeypatch.setattr(models, "load_causal_lm", recording)
    assert _label(inputs, fixtures_dir, "--device", "cpu", "--dtype", "bfloat16",
                  "--cache", str(inputs / "bf16.sqlite")) == 0, capsys.readouterr().err
    assert loaded == [({"device": "cpu", "dtype": "bfloat16"}, torch.bfloat16, "cpu")]
    with pytest.raises(SystemExit):  # argparse refuses a dtype that is not a choice
        _label(inputs, fixtures_dir, "--dtype", "int8")
    assert "invalid choice: 'int8'" in capsys.readouterr().err


def test_help_names_the_units(capsys):
    from rankline.pipelines.cli import main

    with pytest.raises(SystemExit):
        main(["label", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "sequences per forward pass" in text and "--top N" in text and "--device" in text and "--dtype" in text
    assert "--run" not in text and "--depth" not in text


@pytest.mark.parametrize("extra, message", [
    (["--top", "0"], "--top must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
])
def test_bad_counts_are_one_line(inputs, fixtures_dir, capsys, extra, message):
    assert _label(inputs, fixtures_dir, *extra) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_label_names_missing_documents(inputs, fixtures_dir, capsys):
    (inputs / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "", "text": "x"}) + "\n")
    assert _label(inputs, fixtures_dir) == 2
    err = capsys.readouterr().err
    assert "corpus.jsonl: 2 documents of" in err and "not found" in err and len(err.strip().splitlines()) == 1
