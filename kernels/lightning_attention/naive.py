"""The oracle of lightning attention: the full [T, T] decay matrix, quadratic in T."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..backend import accumulation_dtype
from .decay import _exp_masked

if TYPE_CHECKING:
    import torch


def lightning_attention_naive(
    q: "torch.Tensor",
    k: "torch.Tensor",
    v: "torch.Tensor",
    log_decay: "torch.Tensor",
    scale: float,
    initial_state: "torch.Tensor | None",
) -> "tuple[torch.Tensor, torch.Tensor]":
    """Reference: the full [T, T] decay matrix. Returns o (input dtype) and the final state (accumulation dtype)."""
    import torch

    dtype, acc = q.dtype, accumulation_dtype(q.dtype)
    q, k, v = q.to(acc), k.to(acc), v.to(acc)
    T = q.shape[2]
    g = log_decay.to(acc)[:, None, None]  # [H, 1, 1]
    t = torch.arange(T, device=q.device, dtype=acc)
    lag = t[:, None] - t[None, :]
    decay = _exp_masked(g * lag, lag >= 0)  # [H, T, T]
    o = ((q @ k.transpose(-1, -2)) * decay) @ v
    tail = torch.exp(g * (T - 1 - t)[:, None])  # [H, T, 1]: weight of token j in the final state
    state = (k * tail).transpose(-1, -2) @ v
    if initial_state is not None:
        s0 = initial_state.to(acc)
        o = o + torch.exp(g * (t + 1)[:, None]) * (q @ s0)
        state = state + torch.exp(g * T) * s0
    return (scale * o).to(dtype), state
