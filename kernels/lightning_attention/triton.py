"""Triton path of lightning attention: one program per (batch, head, value tile) walks the chunks in order,
keeping the [Dk, Dv-tile] state in registers: inside a chunk (q k^T * decay mask) v, between chunks the
decayed state. The backward reuses this kernel three times (see ``chunked.lightning_attention_backward``).

Runs on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (how the tests check it). Computes in
fp32 (``ieee`` dot precision, so results match the fp32 reference); other dtypes are cast on the way in and out.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _linear_attention_kernel(
    Q, K, V, G, S0, O, SF,
    T, H, DK, DV, scale,
    HAS_S0: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    bh = tl.program_id(0)
    v_tile = tl.program_id(1)
    g = tl.load(G + bh % H)
    offs_t = tl.arange(0, BLOCK_T)
    offs_k = tl.arange(0, BLOCK_K)
    offs_v = v_tile * BLOCK_V + tl.arange(0, BLOCK_V)
    mask_k = offs_k < DK
    mask_v = offs_v < DV
    q_base = Q + bh * T * DK
    k_base = K + bh * T * DK
    v_base = V + bh * T * DV
    o_base = O + bh * T * DV
    state_offs = bh * DK * DV + offs_k[:, None] * DV + offs_v[None, :]
    state_mask = mask_k[:, None] & mask_v[None, :]
    if HAS_S0:
        state = tl.load(S0 + state_offs, mask=state_mask, other=0.0)
    else:
        state = tl.zeros([BLOCK_K, BLOCK_V], dtype=tl.float32)

    lag = offs_t[:, None] - offs_t[None, :]
    intra_decay = tl.where(lag >= 0, tl.exp(g * tl.where(lag >= 0, lag, 0).to(tl.float32)), 0.0) * scale
    query_weight = tl.exp(g * (offs_t + 1).to(tl.float32)) * scale

    for start in range(0, T, BLOCK_T):
        rows = start + offs_t
        mask_t = rows < T
        q = tl.load(q_base + rows[:, None] * DK + offs_k[None, :], mask=mask_t[:, None] & mask_k[None, :], other=0.0)
        k = tl.load(k_base + rows[:, None] * DK + offs_k[None, :], mask=mask_t[:, None] & mask_k[None, :], other=0.0)
        v = tl.load(v_base + rows[:, None] * DV + offs_v[None, :], mask=mask_t[:, None] & mask_v[None, :], other=0.0)
        scores = tl.dot(q, tl.trans(k), input_precision="ieee") * intra_decay
        o = tl.dot(scores, v, input_precision="ieee")
        o += tl.dot(q * query_weight[:, None], state, input_precision="ieee")
        tl.store(o_base + rows[:, None] * DV + offs_v[None, :], o, mask=mask_t[:, None] & mask_v[None, :])
        # tokens of this chunk (the last one may be short) and their decay to the chunk's end
        n_valid = tl.sum(tl.where(mask_t, 1.0, 0.0), axis=0)
        to_end = n_valid - 1.0 - offs_t.to(tl.float32)
        key_weight = tl.where(to_end >= 0, tl.exp(g * tl.where(to_end >= 0, to_end, 0.0)), 0.0)
        state = tl.exp(g * n_valid) * state + tl.dot(tl.trans(k * key_weight[:, None]), v, input_precision="ieee")

    tl.store(SF + state_offs, state, mask=state_mask)


def _output(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Output buffers are left uninitialised: the kernel must write every element (tests poison them with NaN)."""
    return torch.empty(shape, dtype=torch.float32, device=like.device)


def triton_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    initial_state: torch.Tensor | None,
    chunk_size: int,
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """o_t = scale * q_t S_t and the final state, same contract as ``chunked.chunked_linear_attention``."""
    dtype = q.dtype
    B, H, T, DK = q.shape
    DV = v.shape[-1]
    q, k, v = (x.float().contiguous() for x in (q, k, v))
    g = log_decay.float().contiguous()
    s0 = None if initial_state is None else initial_state.float().contiguous()
    o = _output((B, H, T, DV), q)
    final_state = _output((B, H, DK, DV), q)
    block_t = max(16, min(64, triton.next_power_of_2(chunk_size)))
    block_k = max(16, triton.next_power_of_2(DK))
    block_v = max(16, min(64, triton.next_power_of_2(DV)))
    grid = (B * H, triton.cdiv(DV, block_v))
    _linear_attention_kernel[grid](
        q, k, v, g, s0 if s0 is not None else q, o, final_state,
        T, H, DK, DV, float(scale),
        HAS_S0=s0 is not None, BLOCK_T=block_t, BLOCK_K=block_k, BLOCK_V=block_v,
    )
    return o.to(dtype), final_state.to(dtype)
