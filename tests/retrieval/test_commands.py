"""The `rankline index / retrieve / search` commands, including one-line errors with exit code 2."""
from __future__ import annotations

import pytest

from rankline.formats import read_run
from rankline.pipelines.cli import main

from .conftest import write_beir_corpus


@pytest.fixture
def index_dir(tiny_encoder, corpus_a, tmp_path):
    out = tmp_path / "idx"
    assert main(["index", str(corpus_a), "--out", str(out), "--encoder", tiny_encoder]) == 0
    return out


def test_index_retrieve_search(index_dir, tmp_path, capsys, tiny_encoder, corpus_a):
    assert main(["index", str(corpus_a), "--out", str(index_dir)]) == 0
    assert "up to date (6 documents)" in capsys.readouterr().out
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\tred apples\nq2\twine from grapes\na4\tlazy fox\n")
    for method in ("bm25", "dense", "hybrid"):
        run_path = tmp_path / f"{method}.trec"
        assert main(["retrieve", str(index_dir), "--topics", str(topics), "--method", method, "--k", "3",
                     "--out", str(run_path), "--remove-query"]) == 0
        run = read_run(run_path)
        assert set(run) <= {"q1", "q2", "a4"} and all(len(docs) <= 3 for docs in run.values())
        assert "a4" not in run.get("a4", {})  # --remove-query
    assert main(["search", str(index_dir), "grapes and wine", "--method", "bm25", "--k", "2"]) == 0
    out = capsys.readouterr().out
    assert "  1. a5  score" in out and "Grapes" in out and "vineyards turn grapes into wine" in out


@pytest.mark.parametrize("argv, message", [
    (["index", "{tmp}/missing", "--out", "{tmp}/x"], "no such corpus file or folder"),
    (["index", "{tmp}/empty.jsonl", "--out", "{tmp}/x", "--bm25"], "holds no documents"),
    (["index", "{tmp}/dup.jsonl", "--out", "{tmp}/x", "--bm25"], "duplicate document id 'd'"),
    (["retrieve", "{idx}", "--topics", "{tmp}/t.tsv", "--method", "splade", "--out", "{tmp}/r"], "unknown retrieval method 'splade'"),
    (["retrieve", "{idx}", "--topics", "{tmp}/t.tsv", "--k", "0", "--out", "{tmp}/r"], "--k must be a positive integer"),
    (["search", "{idx}", "fruit", "--k", "-3"], "--k must be a positive integer"),
    (["search", "{tmp}/nowhere", "fruit"], "no such index folder"),
])
def test_bad_input_is_one_line_exit_2(index_dir, tmp_path, capsys, argv, message):
    (tmp_path / "empty.jsonl").write_text("")
    write_beir_corpus(tmp_path / "dup.jsonl", [("d", "", "x"), ("d", "", "y")])
    (tmp_path / "t.tsv").write_text("q1\tfruit\n")
    capsys.readouterr()
    assert main([a.format(tmp=tmp_path, idx=index_dir) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
