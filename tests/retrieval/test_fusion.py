"""Fusion: hand-computed cases and parity with pyserini's own fusion (the reference implementation)."""
from __future__ import annotations

import pytest

from rankline.formats import read_run, write_run
from rankline.retrieval.fusion import fuse, fuse_runs, interpolate, min_max, rrf


def test_rrf_hand_computed():
    a = {"x": 3.0, "y": 2.0, "z": 1.0}
    b = {"y": 9.0, "w": 5.0}
    fused = rrf([a, b], k=60)
    assert fused == pytest.approx({"x": 1 / 61, "y": 1 / 62 + 1 / 61, "z": 1 / 63, "w": 1 / 62})
    assert rrf([a, b], k=60, fusion_depth=1) == pytest.approx({"x": 1 / 61, "y": 1 / 61})


def test_rrf_ranks_ties_as_trec_eval():
    # equal scores: trec_eval ranks the larger docid first
    assert rrf([{"d1": 1.0, "d2": 1.0}], k=0) == pytest.approx({"d2": 1.0, "d1": 0.5})


def test_min_max_and_interpolation_hand_computed():
    assert min_max({"a": 2.0, "b": 4.0, "c": 3.0}) == pytest.approx({"a": 0.0, "b": 1.0, "c": 0.5})
    assert min_max({"a": 7.0}) == {"a": 1.0}
    fused = interpolate([{"a": 2.0, "b": 4.0, "c": 3.0}, {"a": 10.0, "d": 0.0}], weights=[0.25, 0.75])
    assert fused == pytest.approx({"a": 0.75, "b": 0.25, "c": 0.125, "d": 0.0})


def test_fuse_validates():
    with pytest.raises(ValueError, match="two or more"):
        fuse([{"a": 1.0}])
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse([{}, {}], "borda")
    with pytest.raises(ValueError, match="3 fusion weights for 2"):
        fuse([{}, {}], "interpolate", weights=[1, 2, 3])


def _runs():
    import random

    rng = random.Random(7)
    runs = []
    for _ in range(3):
        run = {}
        for q in ("q1", "q2"):
            docs = rng.sample([f"d{i}" for i in range(40)], 25)
            run[q] = {d: round(rng.uniform(0, 20), 3) for d in docs}
        runs.append(run)
    return runs


def test_rrf_matches_pyserini(tmp_path):
    from pyserini.fusion import reciprocal_rank_fusion
    from pyserini.trectools import TrecRun

    runs = _runs()
    paths = []
    for i, run in enumerate(runs):
        write_run(tmp_path / f"r{i}.trec", run)
        paths.append(str(tmp_path / f"r{i}.trec"))
    theirs = reciprocal_rank_fusion([TrecRun(p) for p in paths], rrf_k=60, depth=20, k=1000)
    theirs.save_to_txt(str(tmp_path / "theirs.trec"))
    ours = fuse_runs([read_run(p) for p in paths], "rrf", rrf_k=60, fusion_depth=20)
    expected = read_run(tmp_path / "theirs.trec")
    assert ours.keys() == expected.keys()
    for q in ours:
        assert ours[q] == pytest.approx(expected[q], abs=1e-6)


def test_normalised_interpolation_matches_pyserini(tmp_path):
    from pyserini.fusion import interpolation
    from pyserini.trectools import RescoreMethod, TrecRun

    runs = _runs()[:2]
    trec = []
    for i, run in enumerate(runs):
        write_run(tmp_path / f"r{i}.trec", run)
        trec.append(TrecRun(str(tmp_path / f"r{i}.trec")).rescore(method=RescoreMethod.NORMALIZE))
    interpolation(trec, alpha=0.3).save_to_txt(str(tmp_path / "theirs.trec"))
    expected = read_run(tmp_path / "theirs.trec")
    ours = fuse_runs([read_run(tmp_path / f"r{i}.trec") for i in range(2)], "interpolate", weights=[0.3, 0.7])
    for q in ours:
        assert ours[q] == pytest.approx(expected[q], abs=1e-6)
