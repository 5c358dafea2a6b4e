"""The recurrent form of lightning attention, one token at a time: the decoding step."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from .decay import _log_decay_tensor

if TYPE_CHECKING:
    import torch


def lightning_attention_step(
    q: "torch.Tensor",
    k: "torch.Tensor",
    v: "torch.Tensor",
    state: "torch.Tensor",
    log_decay: "torch.Tensor | Sequence[float]",
    *,
    scale: float | None = None,
) -> "tuple[torch.Tensor, torch.Tensor]":
    """One decoding step: q, k ``[B, H, Dk]``, v ``[B, H, Dv]``, state ``[B, H, Dk, Dv]``.

    S' = exp(log_decay) S + k v^T; returns (scale * q S' in q's dtype, S' in the state's dtype).
    """
    import torch

    if q.dim() != 3 or k.shape != q.shape or v.shape[:2] != q.shape[:2]:
        raise ValueError(
            "lightning_attention_step: q, k must be [B, H, Dk] and v [B, H, Dv], got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    expected = (*q.shape, v.shape[-1])
    if tuple(state.shape) != expected:
        raise ValueError(f"lightning_attention_step: state must be {expected}, got {tuple(state.shape)}")
    acc = state.dtype
    g = _log_decay_tensor(log_decay, q.shape[1], state)
    new_state = torch.exp(g)[:, None, None] * state + k.to(acc)[..., :, None] * v.to(acc)[..., None, :]
    o = (q.to(acc)[..., None, :] @ new_state)[..., 0, :]
    return ((1.0 if scale is None else float(scale)) * o).to(q.dtype), new_state
