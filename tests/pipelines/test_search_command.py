"""`rankline search`: a pipeline file, or an index folder with --reranker, through the same executor as
`rankline rerank`; mistakes are one-line errors."""
from __future__ import annotations

import json
import re

import pytest

from rankline.formats import read_run
from rankline.pipelines.cli import main

DOCS = [("a1", "Apples", "apple orchards grow red apples in autumn"),
        ("a2", "Bananas", "banana plantations need a warm humid climate"),
        ("a3", "Cherries", "cherry trees blossom in spring and fruit in summer"),
        ("a5", "Grapes", "vineyards turn grapes into wine and red wine from red grapes")]


def _printed(out: str) -> list[tuple[str, str]]:
    """(docid, score) of each hit line that `search` printed."""
    return re.findall(r"^\s+\d+\. (\S+)  score (\S+)", out, flags=re.M)


def test_search_a_pipeline_file(toy, tmp_path, capsys):
    path = tmp_path / "toy.yaml"
    path.write_text(f'retriever: {{factory: "{toy.__name__}:KeywordRetriever", k: 4}}\n'
                    f'reranker: {{factory: "{toy.__name__}:ShortestFirstReranker", depth: 3}}\n')
    assert main(["search", "--pipeline", str(path), "documents query ranks", "--k", "4"]) == 0
    # keywords retrieve d6, d3, d4, d5; the top 3 go shortest first (d4, d6, d3), d5 stays below them
    assert _printed(capsys.readouterr().out) == [("d4", "3.0000"), ("d6", "2.0000"), ("d3", "1.0000"), ("d5", "0.0000")]


@pytest.mark.slow
def test_search_with_reranker_equals_retrieve_then_rerank(fixtures_dir, tmp_path, capsys):
    """search DIR --reranker prints the top k of what `rankline rerank` writes for the same candidates."""
    corpus, topics = tmp_path / "corpus.jsonl", tmp_path / "topics.tsv"
    corpus.write_text("".join(json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, t, x in DOCS))
    topics.write_text("q\tred wine grapes\n")
    model = str(fixtures_dir / "first-parity" / "tiny-llama")
    reranker = ["--reranker", "query-likelihood", "--model", model, "--device", "cpu", "--depth", "3"]
    assert main(["index", str(corpus), "--out", str(tmp_path / "idx"), "--bm25"]) == 0
    assert main(["retrieve", str(tmp_path / "idx"), "--topics", str(topics), "--method", "bm25", "--k", "3",
                 "--out", str(tmp_path / "bm25.trec")]) == 0
    assert main(["rerank", "--candidates", str(tmp_path / "bm25.trec"), "--topics", str(topics), "--corpus", str(corpus),
                 *reranker, "--out", str(tmp_path / "reranked.trec")]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), "red wine grapes", "--method", "bm25", "--k", "2", *reranker]) == 0
    run = read_run(tmp_path / "reranked.trec")["q"]
    want = [(docid, f"{score:.4f}") for docid, score in sorted(run.items(), key=lambda kv: -kv[1])[:2]]
    assert _printed(capsys.readouterr().out) == want
    assert all(float(score) < 0 for _, score in want)  # query-likelihood log-probabilities, not BM25 scores


@pytest.mark.parametrize("argv, message", [
    (["search", "fruit"], "give an index folder DIR or --pipeline FILE"),
    (["search", "{tmp}", "fruit", "--pipeline", "{tmp}/p.yaml"], "give neither DIR nor --reranker with it"),
    (["search", "--pipeline", "{tmp}/p.yaml", "fruit", "--reranker", "first"], "give neither DIR nor --reranker"),
    (["search", "{tmp}", "fruit", "--reranker", "first", "--layer", "2"], "--layer does not apply to --reranker first"),
    (["search", "{tmp}", "fruit", "--reranker", "first", "--depth", "0"], "--depth must be >= 1, got 0"),
])
def test_mistakes_are_one_line_errors(tmp_path, capsys, argv, message):
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
