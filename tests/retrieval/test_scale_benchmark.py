"""benchmarks/scale.py (issue 17): the plan's arithmetic against hand-computed cases, and one tiny run
end to end (flat and IVF-PQ, 1 and 3 shards in-process) whose exactness columns must read 1.000."""
from __future__ import annotations

import re

import pytest


@pytest.fixture(scope="module")
def scale(benchmark_script):
    return benchmark_script("scale")


def test_plan_by_hand(scale):
    # 1000 rows of 100 B; 5000 row-queries per core-second; 2 cores, 50,000 B a node; 10 queries/s:
    # memory allows 50,000 / 100 = 500 rows a node, speed 5000 * 2 / 10 = 1000 -> ceil(1000 / 500) = 2 nodes
    p = scale.plan(1000, 100, 5000, target_qps=10, node_bytes=50_000, node_cores=2)
    assert p == {"rows_by_memory": 500, "rows_by_speed": 1000, "nodes": 2, "rows_per_node": 500,
                 "bytes_per_node": 50_000, "qps": 20}  # 5000 * 2 / 500
    # 40 queries/s: speed allows 5000 * 2 / 40 = 250 rows -> 4 nodes of 250 rows, each serving exactly 40 queries/s
    p = scale.plan(1000, 100, 5000, target_qps=40, node_bytes=50_000, node_cores=2)
    assert (p["rows_by_speed"], p["nodes"], p["rows_per_node"], p["bytes_per_node"], p["qps"]) == (250, 4, 250, 25_000, 40)
    # 1001 rows: ceil(1001 / 500) = 3 nodes of ceil(1001 / 3) = 334 rows = 33,400 B, 10,000 / 334 queries/s
    p = scale.plan(1001, 100, 5000, target_qps=10, node_bytes=50_000, node_cores=2)
    assert (p["nodes"], p["rows_per_node"], p["bytes_per_node"]) == (3, 334, 33_400) and p["qps"] == pytest.approx(29.94, abs=0.01)
    # 7.2M passages at 1000 a second on each of 2 GPUs: 3600 s
    assert scale.encode_hours(7_200_000, 1000, 2) == 1.0


def test_tiny_run_is_exact_and_prints_the_plan(scale, capsys):
    assert scale.main(["--n", "3000", "--dim", "16", "--m", "8", "--nlist", "16", "--train-size", "700", "--shards", "1", "3",
                       "--queries", "20", "--batch", "10", "--repeat", "1", "--no-ray", "--nprobe", "2", "16"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^(flat|ivfpq) (\d) shard\(s\), in-process .* (\d\.\d{3}) / (\d\.\d{3}) ", out, re.M)
    assert [(kind, shards) for kind, shards, _, _ in rows] == [("flat", "1"), ("flat", "3"), ("ivfpq", "1"), ("ivfpq", "3")]
    assert all(same_first == "1.000" for _, _, same_first, _ in rows)
    assert [same_faiss for kind, _, _, same_faiss in rows if kind == "ivfpq"] == ["1.000", "1.000"]  # ids and scores
    recall = {int(p): float(r) for p, r in re.findall(r"nprobe (\d+): (\d\.\d+)", out)}
    assert set(recall) == {2, 16} and 0 < recall[2] <= recall[16] <= 1
    assert "8,841,823 passages, flat: memory 8,841,823 x 64.0 B" in out  # 16 float32 dimensions a row
    assert "100,000,000 passages, encoding" in out


def test_bad_options_are_refused(scale, capsys):
    for argv, message in ((["--m", "5"], "--m must divide --dim"), (["--nlist", "1024", "--train-size", "1000"], "--train-size must lie in"),
                          (["--nprobe", "0"], "must be positive")):
        with pytest.raises(SystemExit):
            scale.parse_args(argv)
        assert message in capsys.readouterr().err
