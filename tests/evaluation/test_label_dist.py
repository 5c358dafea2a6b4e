"""Label distribution files and empirical distributions from several label sets (hand-computed)."""
from __future__ import annotations

import numpy as np
import pytest

from rankline.formats import FormatError
from rankline.evaluation.label_dist import empirical_label_dist, expected_grades, read_label_dist, write_label_dist


def test_empirical_distribution_hand_computed():
    a = {"q": {"d1": 3, "d2": 0}}
    b = {"q": {"d1": 1}}
    dist = empirical_label_dist([a, b, a], pseudo_count=0.5)
    np.testing.assert_allclose(dist["q"]["d1"], np.array([0.5, 1.5, 0.5, 2.5]) / 5)
    np.testing.assert_allclose(dist["q"]["d2"], np.array([2.5, 0.5, 0.5, 0.5]) / 4)  # only two sets judge d2
    np.testing.assert_allclose(empirical_label_dist([a], pseudo_count=0)["q"]["d1"], [0, 0, 0, 1])
    with pytest.raises(ValueError, match="outside 0..3"):
        empirical_label_dist([{"q": {"d": 4}}])


def test_expected_and_argmax_grades():
    dists = {"q": {"d": np.array([0.1, 0.2, 0.3, 0.4]), "e": np.array([0.5, 0.0, 0.0, 0.5])}}
    assert expected_grades(dists) == {"q": {"d": 2, "e": 2}}  # E = 2.0 and 1.5 -> rounds half up
    assert expected_grades(dists, argmax=True) == {"q": {"d": 3, "e": 0}}


def test_round_trip_and_errors(tmp_path):
    dists = {"q1": {"d1": np.array([0.25, 0.25, 0.5, 0.0])}, "q2": {"d9": np.array([1.0, 0, 0, 0])}}
    write_label_dist(tmp_path / "x.dist", dists)
    back = read_label_dist(tmp_path / "x.dist")
    np.testing.assert_allclose(back["q1"]["d1"], dists["q1"]["d1"])
    (tmp_path / "bad.dist").write_text("q1 d1 0.2 0.2 0.2 0.2\n")
    with pytest.raises(FormatError, match="bad.dist:1: expected non-negative probabilities summing to 1"):
        read_label_dist(tmp_path / "bad.dist")
    (tmp_path / "ragged.dist").write_text("q1 d1 0.5 0.5 0 0\nq1 d2 0.5 0.5\n")
    with pytest.raises(FormatError, match="ragged.dist:2"):
        read_label_dist(tmp_path / "ragged.dist")
