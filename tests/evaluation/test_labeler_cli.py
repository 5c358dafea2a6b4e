"""`rankline label` end to end on the tiny Llama: qrels + distributions, cache reuse, clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")


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


def _label(path, fixtures_dir, *extra):
    from rankline.pipelines.cli import main

    return main([
        "label", "--topics", str(path / "topics.tsv"), "--run", str(path / "run.trec"), "--corpus",
        str(path / "corpus.jsonl"), "--depth", "2", "--out", str(path / "labels.qrels"),
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


def test_label_names_missing_documents(inputs, fixtures_dir, capsys):
    (inputs / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "", "text": "x"}) + "\n")
    assert _label(inputs, fixtures_dir) == 2
    assert "not in the corpus" in capsys.readouterr().err
