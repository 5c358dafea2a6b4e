"""The PyTorch path of BlockRank attention, block by block: instruction and query rows against their prefix,
every document as its own batch row over [instruction keys, own keys], in SDPA calls planned once per layout;
and the document scores from chosen query tokens and the document keys alone."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from ..backend import accumulation_dtype
from .layout import BlockLayout

if TYPE_CHECKING:
    import torch

# Attention-score elements per batched document call: small enough that a call's working set stays in cache,
# so the time per document does not grow with the number of documents.
_DOC_CHUNK_ELEMENTS = 1 << 22


def _attend(
    q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor", mask: "torch.Tensor", scale: float
) -> "torch.Tensor":
    """SDPA with grouped-query heads; every query row of ``mask`` allows at least one key."""
    import torch.nn.functional as F

    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1])


@dataclass(frozen=True)
class _Call:
    """One batched SDPA call of the torch path: rows gathered at (batch, pos) attend to keys gathered at
    (batch, key_pos) under `mask`; outputs of the valid slots are written back to (write_b, write_pos)."""

    batch: "torch.Tensor"  # [R, 1]
    pos: "torch.Tensor"  # [R, W], padded slots point at token 0
    key_pos: "torch.Tensor | None"  # [R, K], or None: keys are the prefix k[:, :, :key_len] of the same row
    key_len: int
    mask: "torch.Tensor"  # [R, 1, W, K] bool
    valid: "torch.Tensor"  # [R * W] indices of the real slots in the flattened [R, W]
    write_b: "torch.Tensor"  # [V]
    write_pos: "torch.Tensor"  # [V]


def _prefix_call(positions: list[list[int]], key_len: int, device: "torch.device") -> _Call:
    """Instruction or query rows of every batch row, causal on the row's prefix of `key_len` keys."""
    import torch

    width = max(len(r) for r in positions)
    pos = torch.tensor([r + [-1] * (width - len(r)) for r in positions], dtype=torch.long, device=device)
    valid = pos >= 0
    j = torch.arange(key_len, device=device)
    mask = (j <= pos[..., None]) | (~valid[..., None] & (j == 0))  # padded rows see key 0; dropped
    batch = torch.arange(len(positions), device=device)[:, None]
    return _Call(batch, pos.clamp(min=0), None, key_len, mask[:, None], valid.flatten().nonzero()[:, 0],
                 batch.expand_as(pos)[valid], pos[valid])


def _doc_call(docs: list[tuple[int, int, int]], instruction: tuple[int, ...], device: "torch.device") -> _Call:
    """Documents (batch row, start, length), one SDPA row each over [its row's instruction keys | own keys]."""
    import torch

    n_doc_max = max(n for _, _, n in docs)
    n_instr_max = max(instruction[b] for b, _, _ in docs)
    t = torch.arange(n_doc_max, device=device)
    ji = torch.arange(n_instr_max, device=device)
    b, start, length = torch.tensor(docs, dtype=torch.long, device=device).unbind(1)
    n_instr = torch.tensor(instruction, dtype=torch.long, device=device)[b]
    b = b[:, None]
    valid = t < length[:, None]  # [P, Ld]
    doc_pos = torch.where(valid, start[:, None] + t, 0)
    key_pos = torch.cat([torch.where(ji < n_instr[:, None], ji, 0), doc_pos], dim=1)
    instr_mask = valid[:, :, None] & (ji < n_instr[:, None])[:, None, :]
    causal = t[:, None] >= t[None, :]
    doc_mask = causal & (valid[:, :, None] | (t[:, None] == t[None, :]))  # padded rows see themselves
    mask = torch.cat([instr_mask, doc_mask], dim=2)[:, None]
    return _Call(b, doc_pos, key_pos, key_pos.shape[1], mask, valid.flatten().nonzero()[:, 0],
                 b.expand_as(doc_pos)[valid], doc_pos[valid])


def _starts(n_instr: int, lengths: Sequence[int]) -> list[int]:
    starts, pos = [], n_instr
    for n in lengths:
        starts.append(pos)
        pos += n
    return starts


@functools.lru_cache(maxsize=4)
def _plan(layout: BlockLayout, heads: int, device: "torch.device") -> tuple[_Call, ...]:
    """The SDPA calls of the torch path for a layout, built once and reused by every layer of a forward pass.

    Documents go longest first into calls of similar length (little padding), each call holding at most
    ``_DOC_CHUNK_ELEMENTS`` attention-score elements."""
    calls = [
        _prefix_call(positions, key_len, device)
        for positions, key_len in (
            ([list(range(n)) for n in layout.instruction], max(layout.instruction, default=0)),
            ([list(range(q0, q0 + n)) for q0, n in zip(layout.query_starts(), layout.query)], layout.seq_len),
        )
        if max(len(r) for r in positions)
    ]
    docs = sorted(
        ((b, start, n)
         for b, (n_instr, lengths) in enumerate(zip(layout.instruction, layout.docs))
         for start, n in zip(_starts(n_instr, lengths), lengths)
         if n > 0),
        key=lambda d: -d[2],
    )
    n_instr_max = max(layout.instruction, default=0)
    lo = 0
    while lo < len(docs):
        longest = docs[lo][2]  # the chunk's padded length
        size = max(1, _DOC_CHUNK_ELEMENTS // (heads * longest * (n_instr_max + longest)))
        calls.append(_doc_call(docs[lo : lo + size], layout.instruction, device))
        lo += size
    return tuple(calls)


def block_attention_torch(
    q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor", layout: BlockLayout, scale: float
) -> "torch.Tensor":
    """Block-decomposed path: O(instruction^2 + query * T + sum_i len_i * (instruction + len_i)) work.

    Rows are gathered straight from token-major views of q, k, v; padded slots point at token 0 and are
    masked out as keys, and their (dropped) outputs are never written back.
    """
    B, Hq, T, D = q.shape
    q_tokens, k_tokens, v_tokens = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, T, H, D] views
    out = q.new_zeros(B, Hq, T, D)
    out_tokens = out.transpose(1, 2)
    for call in _plan(layout, Hq, q.device):
        if call.key_pos is None:
            keys, values = k[:, :, : call.key_len], v[:, :, : call.key_len]
        else:
            keys = k_tokens[call.batch, call.key_pos].transpose(1, 2)
            values = v_tokens[call.batch, call.key_pos].transpose(1, 2)
        o = _attend(q_tokens[call.batch, call.pos].transpose(1, 2), keys, values, call.mask, scale)
        out_tokens[call.write_b, call.write_pos] = o.transpose(1, 2).flatten(0, 1)[call.valid]
    return out


def _document_mass(
    selected: "torch.Tensor", k: "torch.Tensor", doc_of_token: "torch.Tensor", num_docs: int, scale: float
) -> "torch.Tensor":
    """Scores [B, N] from queries [B, Hq, n, D] and keys [B, Hkv, S, D] whose token j belongs to document
    ``doc_of_token[b, j]`` (-1: not a document token): one softmax over the document tokens per head and
    query token (fp32, fp64 for fp64 inputs), mean over both, summed per document."""
    import torch

    B, Hkv = k.shape[:2]
    rep = selected.shape[1] // Hkv
    acc = accumulation_dtype(selected.dtype)
    logits = (selected.to(acc).unflatten(1, (Hkv, rep)) @ k.to(acc).transpose(-1, -2)[:, :, None]) * scale
    is_doc = (doc_of_token >= 0)[:, None, None, None, :]  # logits: [B, Hkv, rep, n, S]
    probs = torch.softmax(logits.masked_fill(~is_doc, float("-inf")), dim=-1)
    mass = probs.nan_to_num(0.0).mean(dim=(1, 2, 3))  # [B, S]; NaN only in rows without document tokens
    scores = mass.new_zeros(B, num_docs + 1)
    return scores.scatter_add_(1, torch.where(doc_of_token >= 0, doc_of_token, num_docs), mass)[:, :-1]
