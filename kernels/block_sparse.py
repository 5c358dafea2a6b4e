"""BlockRank block-sparse attention ("Scalable In-context Ranking with Generative Models", Gupta et al. 2025).

Per row the tokens are ``[instruction | doc_1 | ... | doc_N | query | right padding]`` (see
:class:`~rankline.kernels.block_layout.BlockLayout`). The instruction is causal on itself; each document
attends to the whole instruction and causally to itself; the query block attends to everything before it
and causally to itself; padding attends nowhere and its output is 0.

Shapes: q ``[B, Hq, T, D]``, k and v ``[B, Hkv, T, D]`` with Hq a multiple of Hkv (grouped-query attention:
query head h reads key/value head ``h // (Hq // Hkv)``, as Llama's ``repeat_kv``). Default scale ``D**-0.5``.

Backends: ``naive`` builds the dense [T, T] mask (the oracle); ``torch`` decomposes by block (instruction and
query rows against their prefix, every document as its own batch row over [instruction keys, own keys]), so
its cost grows linearly with the number of documents; ``triton`` is a flash-style GPU kernel (forward only)
that visits only the key tiles a query tile may see.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from .backend import accumulation_dtype, resolve_backend
from .block_layout import BlockLayout

if TYPE_CHECKING:
    import torch

# Attention-score elements per batched document call: small enough that a call's working set stays in cache,
# so the time per document does not grow with the number of documents.
_DOC_CHUNK_ELEMENTS = 1 << 22


def _check_shapes(q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor | None", layout: BlockLayout) -> None:
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"block_attention: q and k must be [B, H, T, D], got {tuple(q.shape)} and {tuple(k.shape)}")
    B, Hq, T, D = q.shape
    if k.shape[0] != B or k.shape[2] != T or k.shape[3] != D:
        raise ValueError(f"block_attention: k {tuple(k.shape)} does not match q {tuple(q.shape)} in B, T or D")
    if v is not None and v.shape[:3] != k.shape[:3]:
        raise ValueError(f"block_attention: v {tuple(v.shape)} does not match k {tuple(k.shape)} in B, H or T")
    if Hq % k.shape[1]:
        raise ValueError(f"block_attention: {Hq} query heads is not a multiple of {k.shape[1]} key/value heads")
    if layout.batch_size != B:
        raise ValueError(f"block_attention: layout has {layout.batch_size} rows, tensors have {B}")
    layout.check_length(T)


def block_attention_naive(
    q: "torch.Tensor", k: "torch.Tensor", v: "torch.Tensor", layout: BlockLayout, scale: float
) -> "torch.Tensor":
    """Reference: dense logits, the layout's dense mask, softmax in fp32 (fp64 for fp64 inputs)."""
    import torch

    B, Hq, T, D = q.shape
    rep = Hq // k.shape[1]
    acc = accumulation_dtype(q.dtype)
    kk, vv = k.repeat_interleave(rep, 1).to(acc), v.repeat_interleave(rep, 1).to(acc)
    logits = (q.to(acc) @ kk.transpose(-1, -2)) * scale
    mask = layout.dense_mask(T, q.device)[:, None]
    probs = torch.softmax(logits.masked_fill(~mask, torch.finfo(acc).min), dim=-1).masked_fill(~mask, 0.0)
    return (probs @ vv).to(q.dtype)


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


def block_attention(
    q: "torch.Tensor",
    k: "torch.Tensor",
    v: "torch.Tensor",
    layout: BlockLayout,
    *,
    scale: float | None = None,
    backend: str = "auto",
) -> "torch.Tensor":
    """BlockRank attention output [B, Hq, T, D] (0 at padding tokens)."""
    import torch

    _check_shapes(q, k, v, layout)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    chosen = resolve_backend(backend, q)
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if chosen == "triton" and needs_grad:
        if backend == "triton":
            raise ValueError("block_attention: the Triton path is forward-only; use backend='torch' for gradients")
        chosen = "torch"
    if chosen == "naive":
        return block_attention_naive(q, k, v, layout, scale)
    if chosen == "torch":
        return block_attention_torch(q, k, v, layout, scale)
    from .triton_block_attention import block_attention_triton

    return block_attention_triton(q, k, v, layout, scale)


def block_attention_scores(
    q: "torch.Tensor",
    k: "torch.Tensor",
    layout: BlockLayout,
    *,
    query_index: "torch.Tensor | Sequence[Sequence[int]]",
    scale: float | None = None,
    backend: str = "auto",
) -> "torch.Tensor":
    """BlockRank relevance: attention mass from chosen query-block tokens onto each document, [B, N] fp32.

    ``query_index`` [B, n] holds absolute token positions inside each row's query block. For every head h
    and chosen token t, the logits ``scale * q_t . k_j`` over all document tokens j of the row (instruction,
    query and padding excluded) go through one softmax (fp32); score_i is the mean over (h, t) of the
    probability mass on document i's tokens. Scores of a row sum to 1 (0 for rows without document tokens;
    missing documents score 0). This is the official BlockRank ``compute_auxiliary_attention_loss`` score
    at temperature 1. Only [n, document tokens] logits are formed, never [T, T].
    """
    import torch

    _check_shapes(q, k, None, layout)
    B, Hq, T, D = q.shape
    scale = D**-0.5 if scale is None else float(scale)
    index = torch.as_tensor(query_index, dtype=torch.long, device=q.device)
    if index.dim() != 2 or index.shape[0] != B:
        raise ValueError(f"block_attention_scores: query_index must be [B={B}, n], got {tuple(index.shape)}")
    q0 = torch.tensor(layout.query_starts(), dtype=torch.long, device=q.device)[:, None]
    n_query = torch.tensor(layout.query, dtype=torch.long, device=q.device)[:, None]
    outside = (index < q0) | (index >= q0 + n_query)
    if outside.any():
        b, t = (int(x) for x in outside.nonzero()[0])
        raise ValueError(
            f"block_attention_scores: query_index[{b}][{t}] = {int(index[b, t])} is outside row {b}'s query block "
            f"[{int(q0[b])}, {int(q0[b] + n_query[b])})"
        )
    doc_of_token = layout.index(T, q.device).doc_of_token  # [B, T]
    if resolve_backend(backend, q) == "naive":
        return _scores_naive(q, k, index, doc_of_token, layout.num_docs, scale)
    selected = torch.gather(q, 2, index[:, None, :, None].expand(B, Hq, index.shape[1], D))  # [B, Hq, n, D]
    # Document tokens of every row lie in [smallest instruction length, largest query start).
    lo, hi = min(layout.instruction, default=0), max(layout.query_starts(), default=0)
    return _document_mass(selected, k[:, :, lo:hi], doc_of_token[:, lo:hi], layout.num_docs, scale)


def document_attention_scores(
    q: "torch.Tensor", k: "torch.Tensor", doc_lengths: Sequence[Sequence[int]], *, scale: float | None = None
) -> "torch.Tensor":
    """The scores of :func:`block_attention_scores` from the scoring queries and the document keys alone.

    ``q`` [B, Hq, n, D] holds the chosen query-block tokens (rotated), ``k`` [B, Hkv, S, D] the keys of
    each row's documents back to back (right padding ignored), ``doc_lengths[b]`` their token counts.
    For a caller that keeps the document keys (e.g. in a per-layer cache) rather than whole rows."""
    if q.dim() != 4 or k.dim() != 4 or q.shape[0] != k.shape[0] or q.shape[1] % k.shape[1] or q.shape[3] != k.shape[3]:
        raise ValueError(f"document_attention_scores: q {tuple(q.shape)} and k {tuple(k.shape)} do not match")
    layout = BlockLayout.from_lists([0] * len(doc_lengths), doc_lengths, [0] * len(doc_lengths))
    if layout.batch_size != q.shape[0]:
        raise ValueError(f"document_attention_scores: {layout.batch_size} rows of lengths, tensors have {q.shape[0]}")
    doc_of_token = layout.index(k.shape[2], k.device).doc_of_token
    return _document_mass(q, k, doc_of_token, layout.num_docs, q.shape[-1] ** -0.5 if scale is None else float(scale))


def _document_mass(
    selected: "torch.Tensor", k: "torch.Tensor", doc_of_token: "torch.Tensor", num_docs: int, scale: float
) -> "torch.Tensor":
    """Scores [B, N] from queries [B, Hq, n, D] and keys [B, Hkv, S, D] whose token j belongs to document
    ``doc_of_token[b, j]`` (-1: not a document token): one fp32 softmax over the document tokens per head
    and query token, mean over both, summed per document."""
    import torch

    B, Hkv = k.shape[:2]
    rep = selected.shape[1] // Hkv
    logits = (selected.float().unflatten(1, (Hkv, rep)) @ k.float().transpose(-1, -2)[:, :, None]) * scale
    is_doc = (doc_of_token >= 0)[:, None, None, None, :]  # logits: [B, Hkv, rep, n, S]
    probs = torch.softmax(logits.masked_fill(~is_doc, float("-inf")), dim=-1)
    mass = probs.nan_to_num(0.0).mean(dim=(1, 2, 3))  # [B, S]; NaN only in rows without document tokens
    scores = mass.new_zeros(B, num_docs + 1)
    return scores.scatter_add_(1, torch.where(doc_of_token >= 0, doc_of_token, num_docs), mass)[:, :-1]


def _scores_naive(
    q: "torch.Tensor",
    k: "torch.Tensor",
    index: "torch.Tensor",
    doc_of_token: "torch.Tensor",
    num_docs: int,
    scale: float,
) -> "torch.Tensor":
    """Reference: the full [T, T] attention logits, rows picked afterwards, per-document sums by one-hot matmul."""
    import torch

    B, Hq, T, D = q.shape
    kk = k.repeat_interleave(Hq // k.shape[1], 1).double()
    full = (q.double() @ kk.transpose(-1, -2)) * scale  # [B, Hq, T, T]
    rows = torch.gather(full, 2, index[:, None, :, None].expand(B, Hq, index.shape[1], T))
    is_doc = (doc_of_token >= 0)[:, None, None, :]
    probs = torch.softmax(rows.masked_fill(~is_doc, float("-inf")), dim=-1).nan_to_num(0.0)
    one_hot = torch.nn.functional.one_hot(doc_of_token.clamp(min=0), max(num_docs, 1))[..., :num_docs]
    one_hot = one_hot.double() * (doc_of_token >= 0)[..., None]  # [B, T, N]
    return (probs.mean(dim=(1, 2))[:, None, :] @ one_hot)[:, 0].float()
