"""Tolerance helpers for the kernel tests, in the style of fla's ``assert_close``."""
from __future__ import annotations

from typing import Callable

import pytest
import torch


def relative_rms_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """RMS of the difference over RMS of the reference (fla's error ratio), computed in float64."""
    diff = (actual.detach().double() - expected.detach().double()).pow(2).mean().sqrt()
    base = expected.detach().double().pow(2).mean().sqrt()
    return float(diff / base.clamp(min=1e-30))


@pytest.fixture
def assert_close() -> Callable[[str, torch.Tensor, torch.Tensor, float], None]:
    def check(name: str, actual: torch.Tensor, expected: torch.Tensor, ratio: float) -> None:
        assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
        assert torch.isfinite(actual).all(), f"{name}: non-finite values (unwritten or NaN-poisoned elements)"
        err = relative_rms_error(actual, expected)
        assert err <= ratio, f"{name}: relative RMS error {err:.3g} > {ratio:.3g}"

    return check
