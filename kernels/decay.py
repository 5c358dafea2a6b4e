"""Per-head log-decay schedules for lightning attention (all values <= 0; decay per step = exp(log_decay))."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

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
