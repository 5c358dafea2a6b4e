"""benchmarks/seen_positives.py on a hand case: a query is 'seen' when one of its positives is a positive of a
trained-on query; held-out training queries teach nothing."""
from __future__ import annotations

import math
import sys

import pytest


@pytest.mark.parametrize("held_out", [True, False])
def test_queries_split_by_whether_a_positive_was_taught(tmp_path, benchmark_script, capsys, monkeypatch, held_out):
    (tmp_path / "train.txt").write_text("t1 0 a 1\nt1 0 x 0\nt2 0 b 2\nh1 0 c 1\n")  # x: judged, not a positive
    (tmp_path / "held.txt").write_text("h1\n")
    (tmp_path / "test.txt").write_text("e1 0 a 1\ne2 0 c 1\ne3 0 d 1\ne3 0 x 1\n")
    # e1: its positive first (1.0); e2: second (1 / log2 3); e3: d first, x third
    (tmp_path / "run.trec").write_text("e1 Q0 a 1 3 r\ne1 Q0 z 2 2 r\ne2 Q0 z 1 3 r\ne2 Q0 c 2 2 r\n"
                                       "e3 Q0 d 1 3 r\ne3 Q0 z 2 2 r\ne3 Q0 x 3 1 r\n")
    script = benchmark_script("seen_positives")
    monkeypatch.setattr(sys, "argv", ["seen_positives.py", "--train-qrels", str(tmp_path / "train.txt"),
                                      *(["--held-out", str(tmp_path / "held.txt")] if held_out else []),
                                      "--qrels", str(tmp_path / "test.txt"), str(tmp_path / "run.trec")])
    script.main()
    row = capsys.readouterr().out.splitlines()[2].split()
    e1, e2 = 1.0, 1 / math.log2(3)
    e3 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    seen, unseen = ([e1], [e2, e3]) if held_out else ([e1, e2], [e3])
    assert row[0] == "run.trec"
    assert [float(v) for v in row[1:4]] == pytest.approx(
        [(e1 + e2 + e3) / 3, sum(seen) / len(seen), sum(unseen) / len(unseen)], abs=1e-4)
    assert row[4:] == ["3", f"({len(seen)}", "/", f"{len(unseen)})"]
