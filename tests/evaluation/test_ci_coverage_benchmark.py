"""Smoke test of benchmarks/ci_coverage.py on a slice of the DL 2019 data (few splits)."""
from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_benchmark_writes_table_json_and_plot(data_dir, tmp_path, capsys, benchmark_script):
    bench = benchmark_script("ci_coverage")
    labels = sorted((data_dir / "llm-labels" / "dl2019").glob("*.txt"))[:2]
    code = bench.main([
        "--runs", str(data_dir / "trec-dl-2019" / "runs" / "ICT-BERT2"), "--llm-labels", *map(str, labels),
        "--measures", "DCG@10", "--n", "5", "20", "--splits", "4", "--resamples", "200", "--crc-resamples", "200",
        "--out-dir", str(tmp_path),
    ])
    assert code == 0
    rows = json.loads((tmp_path / "ci_coverage.json").read_text())
    methods = {r["method"] for r in rows}
    assert methods == {"human", "bootstrap", "llm-only", "ppi", "ppi++", "ppi-all", "crc", "crc-query"}
    per_query = next(r for r in rows if r["method"] == "crc-query")
    assert "n=5" not in per_query and "n=20" in per_query  # refused below 19 labelled queries
    assert (tmp_path / "ci_coverage.png").stat().st_size > 10_000
    assert "refused" in capsys.readouterr().out
