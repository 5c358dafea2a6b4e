"""Per-head log decay of lightning attention (all values <= 0; decay per step = exp(log_decay)): the schedules,
the check that turns a caller's ``log_decay`` into a tensor, and the masked exponential the paths build their
decay factors with."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from ..backend import accumulation_dtype

if TYPE_CHECKING:
    import torch


def alibi_slopes(num_heads: int) -> list[float]:
    """ALiBi head slopes (Press et al. 2022): a geometric sequence from 2**(-8/n); interleaved for non-powers of 2."""
    if num_heads < 1:
        raise ValueError(f"alibi_slopes: need at least one head, got {num_heads}")

    def power_of_2(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(num_heads))
    if closest == num_heads:
        return power_of_2(num_heads)
    return power_of_2(closest) + power_of_2(2 * closest)[0::2][: num_heads - closest]


def transnormer_log_decay(num_heads: int, layer_idx: int, num_layers: int) -> "torch.Tensor":
    """TransNormerLLM / lightning-attention schedule: -slope_h * (1 - layer_idx / (num_layers - 1) + 1e-5).

    Lower layers decay fastest; the last layer keeps a tiny decay (1e-5 of the slope) instead of none.
    """
    import torch

    _check_layer(layer_idx, num_layers)
    depth = 1.0 - layer_idx / max(num_layers - 1, 1) + 1e-5
    return -torch.tensor(alibi_slopes(num_heads), dtype=torch.float32) * depth


def fla_log_decay(num_heads: int, layer_idx: int, num_layers: int) -> "torch.Tensor":
    """fla's ``chunk_lightning_attn`` schedule: g_h = -(8 / H) * (1 - layer_idx / num_layers) * h (head 0: no decay)."""
    import torch

    _check_layer(layer_idx, num_layers)
    return -(8.0 / num_heads) * (1.0 - layer_idx / num_layers) * torch.arange(num_heads, dtype=torch.float32)


def _check_layer(layer_idx: int, num_layers: int) -> None:
    if not 0 <= layer_idx < num_layers:
        raise ValueError(f"layer_idx must be in [0, {num_layers}), got {layer_idx}")


def _log_decay_tensor(log_decay: "torch.Tensor | Sequence[float]", heads: int, like: "torch.Tensor") -> "torch.Tensor":
    import torch

    g = torch.as_tensor(log_decay, device=like.device).to(accumulation_dtype(like.dtype)).flatten()
    if g.numel() != heads:
        raise ValueError(f"lightning_attention: log_decay needs one value per head ({heads}), got {g.numel()}")
    if not bool(torch.isfinite(g).all()) or bool((g > 0).any()):
        raise ValueError(f"lightning_attention: log_decay must be finite and <= 0, got {g.tolist()}")
    return g


def _exp_masked(exponent: "torch.Tensor", keep: "torch.Tensor") -> "torch.Tensor":
    """exp(exponent) where keep, else 0 (without evaluating exp of the dropped, possibly huge, exponents)."""
    import torch

    return torch.exp(torch.where(keep, exponent, torch.full_like(exponent, float("-inf"))))
