"""Lightning attention: causal linear attention with a per-head exponential decay (TransNormerLLM,
Lightning Attention-2; fla's ``simple_gla`` with a constant per-head gate).

    o_t = scale * sum_{j <= t} exp(log_decay_h * (t - j)) (q_t . k_j) v_j

or, as a recurrence over the state S_t = exp(log_decay_h) S_{t-1} + k_t v_t^T (S_{-1} = initial_state),
o_t = scale * q_t S_t. Shapes: q, k ``[B, H, T, Dk]``, v ``[B, H, T, Dv]``, state ``[B, H, Dk, Dv]``,
``log_decay`` ``[H]`` (<= 0; a tensor that requires grad gets its gradient, so a decay can be learned). ``scale``
defaults to 1.

Backends: ``naive`` (naive.py: quadratic, the oracle), ``torch`` (chunked.py: quadratic with the decay mask
inside a chunk, a recurrent state between chunks; its backward runs the same chunked algorithm three times,
forward in time for dq and backward in time for dk and dv), ``triton`` (triton.py: the same algorithm as a
GPU kernel). Half-precision inputs are computed in fp32; the final state is returned in fp32 (fp64 for fp64
inputs). ``lightning_attention`` below picks the path; recurrent.py holds the one-token decoding step and
decay.py the per-head log-decay schedules.
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

from ..backend import resolve_backend
from .chunked import _autograd_function, chunked_linear_attention
from .decay import _log_decay_tensor, fla_log_decay, transnormer_log_decay
from .naive import lightning_attention_naive
from .recurrent import lightning_attention_step

if TYPE_CHECKING:
    import torch

__all__ = ["fla_log_decay", "lightning_attention", "lightning_attention_step", "transnormer_log_decay"]


def _check_shapes(q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor", state: "torch.Tensor | None") -> None:
    if q.dim() != 4 or q.shape != k.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            "lightning_attention: q, k must be [B, H, T, Dk] and v [B, H, T, Dv], got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    expected = (q.shape[0], q.shape[1], q.shape[3], v.shape[3])
    if state is not None and tuple(state.shape) != expected:
        raise ValueError(f"lightning_attention: initial_state must be {expected}, got {tuple(state.shape)}")


@lru_cache(maxsize=None)
def _function(backend: str) -> type:
    """The autograd Function of the ``torch`` or ``triton`` path (built once: torch and triton load lazily)."""
    if backend == "torch":
        return _autograd_function(chunked_linear_attention)
    from .triton import triton_linear_attention

    return _autograd_function(triton_linear_attention)


def lightning_attention(
    q: "torch.Tensor",
    k: "torch.Tensor",
    v: "torch.Tensor",
    log_decay: "torch.Tensor | Sequence[float]",
    *,
    scale: float | None = None,
    initial_state: "torch.Tensor | None" = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    backend: str = "auto",
) -> "tuple[torch.Tensor, torch.Tensor | None]":
    """Decayed causal linear attention. Returns ``(o, final_state)``; final_state is None unless asked for."""
    _check_shapes(q, k, v, initial_state)
    if chunk_size < 1:
        raise ValueError(f"lightning_attention: chunk_size must be >= 1, got {chunk_size}")
    g = _log_decay_tensor(log_decay, q.shape[1], q)
    scale = 1.0 if scale is None else float(scale)
    chosen = resolve_backend(backend, q)
    if chosen == "naive" or q.shape[2] == 0:  # the naive form also covers empty sequences
        o, state = lightning_attention_naive(q, k, v, g, scale, initial_state)
    else:
        o, state = _function(chosen).apply(q, k, v, g, scale, initial_state, chunk_size)
    return o, (state if output_final_state else None)
