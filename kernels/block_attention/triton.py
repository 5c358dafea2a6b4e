"""Triton path of BlockRank block attention (forward only): flash-attention style online softmax where a query
tile visits only the key tiles it may see, in two phases: the instruction keys [0, I), then the keys from the
earliest segment start in the tile up to the tile's end. A document tile therefore reads the instruction and
its own documents, so the work grows linearly with the number of documents; instruction and query tiles read
their whole prefix. Padding rows get 0.

Runs on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (how the tests check it). Dot products
and the softmax run in fp32: tiles are upcast after loading (``ieee`` dot precision for fp32 inputs, ``tf32``
for 16-bit inputs, whose mantissa it still exceeds). Upcasting also keeps the interpreter exact: Triton 3.9's
interpreter computes ``tl.dot`` on bf16 operands wrongly.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .layout import BlockLayout


@triton.jit
def _attend_tile(
    acc, m_i, l_i, q, k_base, v_base, offs_m, seg, n_instr, lo, hi, scale, T, D,
    INSTRUCTION_PHASE: tl.constexpr, PRECISION: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    offs_d = tl.arange(0, BLOCK_D)
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        mask_n = (offs_n < hi) & (offs_n < T)
        kv_mask = mask_n[:, None] & (offs_d[None, :] < D)
        k = tl.load(k_base + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0).to(tl.float32)
        v = tl.load(v_base + offs_n[:, None] * D + offs_d[None, :], mask=kv_mask, other=0.0).to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
        allowed = mask_n[None, :] & (offs_n[None, :] <= offs_m[:, None])
        if INSTRUCTION_PHASE:
            allowed = allowed & (offs_n[None, :] < n_instr)
        else:
            allowed = allowed & (offs_n[None, :] >= n_instr) & (offs_n[None, :] >= seg[:, None])
        s = tl.where(allowed, s, -1.0e30)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.where(allowed, tl.exp(s - m_new[:, None]), 0.0)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _block_attention_kernel(
    Q, K, V, O, INSTR_LEN, ROW_LEN, SEG_START,
    scale, T, D, HQ, HKV,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    m_tile = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // HQ
    kv_head = b * HKV + (bh % HQ) // (HQ // HKV)
    n_instr = tl.load(INSTR_LEN + b)
    row_len = tl.load(ROW_LEN + b)
    offs_m = m_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    valid_m = offs_m < row_len
    seg = tl.load(SEG_START + b * T + offs_m, mask=valid_m, other=0)
    q_mask = valid_m[:, None] & (offs_d[None, :] < D)
    q = tl.load(Q + bh * T * D + offs_m[:, None] * D + offs_d[None, :], mask=q_mask, other=0.0).to(tl.float32)
    k_base = K + kv_head * T * D
    v_base = V + kv_head * T * D

    tile_end = tl.minimum(m_tile * BLOCK_M + BLOCK_M, row_len)
    first_segment = tl.min(tl.where(valid_m, seg, T), axis=0)
    own_start = (tl.maximum(first_segment, n_instr) // BLOCK_N) * BLOCK_N

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc, m_i, l_i = _attend_tile(
        acc, m_i, l_i, q, k_base, v_base, offs_m, seg, n_instr, 0, tl.minimum(n_instr, tile_end), scale, T, D,
        INSTRUCTION_PHASE=True, PRECISION=PRECISION, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D,
    )
    acc, m_i, l_i = _attend_tile(
        acc, m_i, l_i, q, k_base, v_base, offs_m, seg, n_instr, own_start, tile_end, scale, T, D,
        INSTRUCTION_PHASE=False, PRECISION=PRECISION, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D,
    )
    out = tl.where(valid_m[:, None], acc / tl.where(l_i > 0, l_i, 1.0)[:, None], 0.0)
    o_mask = (offs_m[:, None] < T) & (offs_d[None, :] < D)
    tl.store(O + bh * T * D + offs_m[:, None] * D + offs_d[None, :], out.to(O.dtype.element_ty), mask=o_mask)


def _output(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Left uninitialised: the kernel must write every element (tests poison it with NaN)."""
    return torch.empty(shape, dtype=like.dtype, device=like.device)


def block_attention_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout, scale: float
) -> torch.Tensor:
    B, HQ, T, D = q.shape
    HKV = k.shape[1]
    index = layout.index(T, q.device)
    q, k, v = (x.contiguous() for x in (q, k, v))
    o = _output(tuple(q.shape), q)
    block_m = block_n = 16 if T <= 16 else 64
    grid = (triton.cdiv(T, block_m), B * HQ)
    _block_attention_kernel[grid](
        q, k, v, o,
        index.instruction_len.to(torch.int32),
        index.row_len.to(torch.int32),
        index.segment_start.to(torch.int32).contiguous(),
        float(scale), T, D, HQ, HKV,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=max(16, triton.next_power_of_2(D)),
    )
    return o
