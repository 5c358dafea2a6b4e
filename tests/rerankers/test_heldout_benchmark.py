"""benchmarks/heldout.py on the tiny Llama: the first-stage row is the hand-computed nDCG@10 of the held-out
queries only, FIRST is scored in first-stage order and shuffled, BlockRank (order-free) in first-stage order."""
from __future__ import annotations

import json
import math
import sys

import pytest

from rankline.formats import Hit


@pytest.fixture()
def files(tmp_path):
    docs = {f"d{i}": f"passage {w}" for i, w in enumerate("cat dog fish bird tree".split())}
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                                   for d, t in docs.items()))
    (tmp_path / "topics.tsv").write_text("q1\twhich cat\nq2\twhich dog\nq3\twhich fish\n")
    run = [f"{q} Q0 d{i} {rank + 1} {10 - rank} bm25\n" for q in ("q1", "q2", "q3") for rank, i in enumerate(range(4))]
    (tmp_path / "run.trec").write_text("".join(run))
    # q1: its one relevant passage is ranked 2nd; q2: 1st; q3 (not held out) would pull the mean down
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\nq2 0 d0 1\nq3 0 d4 1\n")
    (tmp_path / "qids.txt").write_text("q1\nq2\n")
    return tmp_path


@pytest.mark.parametrize("reranker,orders", [("first", 2), ("blockrank", 1)])
def test_first_stage_row_and_orders(files, fixtures_dir, benchmark_script, capsys, monkeypatch, reranker, orders):
    heldout = benchmark_script("heldout")
    monkeypatch.setattr(sys, "argv", [
        "heldout.py", "--run", str(files / "run.trec"), "--topics", str(files / "topics.tsv"),
        "--corpus", str(files / "corpus.jsonl"), "--qrels", str(files / "qrels.txt"), "--qids", str(files / "qids.txt"),
        "--model", str(fixtures_dir / "first-parity" / "tiny-llama"), "--reranker", reranker, "--depth", "4"])
    heldout.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"2 held-out queries of {files / 'qrels.txt'}; {reranker} (")
    first_stage = lines[2].split()
    assert first_stage[:2] == ["first", "stage"] and len(first_stage) == 2 + orders
    assert float(first_stage[2]) == pytest.approx((1 / math.log2(3) + 1.0) / 2, abs=1e-4)
    untuned = lines[3].split()
    assert untuned[0] == "untuned" and len(untuned) == 1 + orders
    assert all(0.0 <= float(v) <= 1.0 for v in untuned[1:])


class Reversing:
    """A stand-in reranker that turns each list upside down."""

    def rerank_batch(self, lists):
        return [[Hit(h.docid, float(i), h.text, h.title) for i, h in enumerate(c.hits)] for c in lists]


def test_rrf_rows_fuse_each_reranker_with_the_first_stage(files, benchmark_script, capsys, monkeypatch):
    heldout = benchmark_script("heldout")
    monkeypatch.setattr(heldout, "build_reranker", lambda *args, **kwargs: Reversing())
    monkeypatch.setattr(sys, "argv", [
        "heldout.py", "--run", str(files / "run.trec"), "--topics", str(files / "topics.tsv"),
        "--corpus", str(files / "corpus.jsonl"), "--qrels", str(files / "qrels.txt"), "--qids", str(files / "qids.txt"),
        "--reranker", "blockrank", "--depth", "4", "--rrf"])
    heldout.main()
    rows = {line[:48].strip(): line[48:].split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert list(rows) == ["first stage", "untuned", "untuned + first stage (RRF)"]
    # reversed: q1's relevant d1 at rank 3, q2's d0 at rank 4
    assert float(rows["untuned"][0]) == pytest.approx((1 / math.log2(4) + 1 / math.log2(5)) / 2, abs=1e-4)
    # RRF k 60 of d0 d1 d2 d3 with its reverse: d0 = d3 (1/61 + 1/64) > d1 = d2 (1/62 + 1/63); ties by docid
    # descending give d3 d0 d2 d1, so q1's d1 is 4th and q2's d0 2nd
    fused = rows["untuned + first stage (RRF)"]
    assert float(fused[0]) == pytest.approx((1 / math.log2(5) + 1 / math.log2(3)) / 2, abs=1e-4)
    assert 0.0 <= float(fused[1]) <= 1.0  # its p against the first stage
