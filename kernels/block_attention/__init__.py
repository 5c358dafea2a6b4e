"""BlockRank block-sparse attention ("Scalable In-context Ranking with Generative Models", Gupta et al. 2025).

Per row the tokens are ``[instruction | doc_1 | ... | doc_N | query | right padding]`` (see
:class:`~rankline.kernels.BlockLayout`, layout.py). The instruction is causal on itself; each document
attends to the whole instruction and causally to itself; the query block attends to everything before it
and causally to itself; padding attends nowhere and its output is 0.

Shapes: q ``[B, Hq, T, D]``, k and v ``[B, Hkv, T, D]`` with Hq a multiple of Hkv (grouped-query attention:
query head h reads key/value head ``h // (Hq // Hkv)``, as Llama's ``repeat_kv``). Default scale ``D**-0.5``.

Backends: ``naive`` (naive.py) builds the dense [T, T] mask (the oracle); ``torch`` (blockwise.py) decomposes
by block (instruction and query rows against their prefix, every document as its own batch row over
[instruction keys, own keys]), so its cost grows linearly with the number of documents; ``triton``
(triton.py) is a flash-style GPU kernel (forward only) that visits only the key tiles a query tile may see.
``block_attention`` and ``block_attention_scores`` below pick the path.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ..backend import resolve_backend
from .blockwise import _document_mass, block_attention_torch
from .layout import BlockLayout
from .naive import _scores_naive, block_attention_naive

if TYPE_CHECKING:
    import torch

__all__ = ["BlockLayout", "block_attention", "block_attention_scores", "document_attention_scores"]


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
    from .triton import block_attention_triton

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
