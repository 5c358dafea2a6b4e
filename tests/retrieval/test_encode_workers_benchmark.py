"""benchmarks/encode_workers.py: its helpers against hand-computed cases, and one run on 12 SciFact
documents with the tiny encoder on the session's Ray (the table, the CPU seconds every worker
reported, identical embeddings)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from .conftest import write_beir_corpus


def test_first_docs_and_max_difference(tmp_path, benchmark_script):
    bench = benchmark_script("encode_workers")
    corpus = write_beir_corpus(tmp_path / "c.jsonl", [("x", "T", "one"), ("y", "", "two"), ("z", "U", "three")])
    assert bench.write_first_docs(corpus, 2, tmp_path / "first.jsonl") == 2
    assert [json.loads(line) for line in (tmp_path / "first.jsonl").read_text().splitlines()] == [
        {"_id": "x", "title": "T", "text": "one"}, {"_id": "y", "title": "", "text": "two"}]
    assert bench.write_first_docs(corpus, 10, tmp_path / "all.jsonl") == 3
    a = np.array([[0.5, -1.0], [2.0, 0.0]], np.float32)
    b = np.array([[0.5, -1.25], [1.5, 0.0]], np.float32)
    assert bench.max_abs_difference(a, b) == 0.5 and bench.max_abs_difference(a, a) == 0.0
    with pytest.raises(ValueError, match=r"\(2, 2\) and \(1, 2\)"):
        bench.max_abs_difference(a, b[:1])


@pytest.mark.slow
@pytest.mark.ray
def test_a_run_on_scifact(ray_session, data_dir, tiny_encoder, benchmark_script, capsys):
    bench = benchmark_script("encode_workers")
    code = bench.main(["--corpus", str(data_dir / "beir" / "scifact" / "corpus.jsonl"), "--docs", "12", "--shard-size", "4",
                       "--batch-size", "3", "--encoder", tiny_encoder])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "# 12 documents of" in out and "3 shards of 4" in out
    assert re.search(r"workers' CPU s each \(work, process\): \([\d.]+, [\d.]+\), \([\d.]+, [\d.]+\)\n", out)
    assert re.search(r"max \|embedding difference\| \S+ \(<= 1e-6\)", out)
    assert ray_session.is_initialized()  # it joined the session's Ray and left it running
