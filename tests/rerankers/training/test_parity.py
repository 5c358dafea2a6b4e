"""Loss parity with the reference implementations: every case of fixtures/loss_parity.json (made by running
rank_llm's, allRank's and BlockRank's own loss functions, see fixtures/README.md) to 1e-6, value and gradient,
through the same code that prints the table (benchmarks/loss_parity.py)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "loss_parity.py"


def _parity():
    spec = importlib.util.spec_from_file_location("loss_parity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("loss_parity", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


PARITY = _parity()
ROWS = PARITY.rows()


def test_every_reference_loss_has_cases():
    assert {r.loss for r in ROWS} == set(PARITY.LOSSES)
    sizes = {r.case.split()[0] for r in ROWS if r.loss == "ranknet"}
    assert {"n3", "n4", "n5", "n6", "n10", "n20"} <= sizes
    assert any("ties" in r.case for r in ROWS) and any("positives" in r.case for r in ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.loss}:{r.case}" for r in ROWS])
def test_matches_the_reference_to_1e6(row):
    assert row.value_delta <= 1e-6, row
    assert row.grad_delta <= 1e-6, row


def test_the_table_prints_with_one_command():
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=True).stdout
    assert "rankline" in out and "compute_auxiliary_attention_loss" in out and "rank_net(weighted=True)" in out
