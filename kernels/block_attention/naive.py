"""The oracles of BlockRank attention: the output under the layout's dense [T, T] mask, and the document
scores from the full [T, T] logits."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..backend import accumulation_dtype
from .layout import BlockLayout

if TYPE_CHECKING:
    import torch


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
    return (probs.mean(dim=(1, 2))[:, None, :] @ one_hot)[:, 0].to(accumulation_dtype(q.dtype))
