"""Runs the Triton cases (interpreted_triton_cases.py) in a subprocess with TRITON_INTERPRET=1.

The variable must be set before the kernels are defined, and it must not leak into the other tests of this
process, so the cases get an interpreter of their own.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CASES = Path(__file__).with_name("interpreted_triton_cases.py")


def test_triton_paths_under_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider", "-x"],
        env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout
