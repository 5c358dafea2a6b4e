"""The learning-rate schedule: linear warm-up, then a cosine decay to zero (transformers'
``get_cosine_schedule_with_warmup``, which rank_llm's and BlockRank's trainers use).

``cosine_with_warmup(step)`` multiplies the peak learning rate for the update made at optimizer step
``step`` (0-based), exactly as transformers: ``step / warmup`` during the warm-up (the first update uses a
learning rate of 0 when warmup > 0), then ``0.5 * (1 + cos(pi * (step - warmup) / (total - warmup)))``.
"""
from __future__ import annotations

import math
from typing import Any


def warmup_steps(total: int, *, steps: int | None = None, ratio: float | None = None) -> int:
    """The warm-up length: `steps` when given, else `ratio` of `total` (rounded up), else 0."""
    if steps is not None and ratio is not None:
        raise ValueError("give the warm-up as steps or as a ratio, not both")
    if steps is not None:
        if steps < 0:
            raise ValueError(f"warm-up steps must be >= 0, got {steps}")
        return min(steps, total)
    if ratio is not None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"the warm-up ratio must be in [0, 1], got {ratio}")
        return math.ceil(ratio * total)
    return 0


def cosine_with_warmup(step: int, *, warmup: int, total: int) -> float:
    """The learning-rate factor at optimizer step `step` (module docstring)."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_scheduler(optimizer: Any, *, warmup: int, total: int) -> Any:
    """A torch ``LambdaLR`` over `optimizer` following :func:`cosine_with_warmup`; its state_dict is what a
    checkpoint saves."""
    import functools

    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(optimizer, functools.partial(cosine_with_warmup, warmup=warmup, total=total))
