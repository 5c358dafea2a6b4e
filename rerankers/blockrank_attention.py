"""BlockRank's structured attention inside any transformers causal LM that dispatches through
`AttentionInterface` (Llama, Mistral, Qwen2/3, SmolLM, ...).

`rankline_blockrank` is registered as an attention function. While `blockrank_attention(model)` is active the
model runs it in every layer; the packed layout of each row ([instruction | doc_1..doc_N | query | padding])
reaches it as the `blockrank` keyword of the forward call, and it calls `rankline.kernels.block_attention`
(cost linear in the number of documents, no [T, T] tensor). Since this implementation has no mask function,
transformers builds no attention mask at all. At the scoring layer it calls `block_attention_scores` on the
rotated queries and keys and stops the forward pass, so that layer's output and all later layers are never
computed (the reference replaces them by identities, which gives the same scores at a higher cost).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:
    import torch

    from rankline.rerankers.blockrank import BlockPrompt

ATTENTION_NAME = "rankline_blockrank"


@dataclass
class BlockRankCall:
    """What the attention function needs for one forward pass: the kernel layout of every row, the layer
    to score at (None: run every layer with block attention) and the positions [B, n] of the query tokens
    that read the scores (the last n tokens of each row's query block)."""

    layout: Any
    layer: int | None = None
    query_index: list[list[int]] | None = None


class _ScoresReady(Exception):
    """Raised by the attention function at the scoring layer to end the forward pass early."""

    def __init__(self, scores: "torch.Tensor"):
        super().__init__("BlockRank scores ready")
        self.scores = scores


def _blockrank_attention_forward(module: Any, query: "torch.Tensor", key: "torch.Tensor", value: "torch.Tensor",
                                 attention_mask: Any, scaling: float, dropout: float = 0.0, **kwargs: Any):
    from rankline.kernels import block_attention, block_attention_scores

    call: BlockRankCall | None = kwargs.get("blockrank")
    if call is None:
        raise RuntimeError(
            f"attention implementation {ATTENTION_NAME!r} needs the block layout: call the model through "
            "rankline.rerankers.blockrank_attention (score_prompts / forward_blocks)"
        )
    if call.layer is not None and module.layer_idx == call.layer:
        raise _ScoresReady(block_attention_scores(query, key, call.layout, query_index=call.query_index, scale=scaling))
    out = block_attention(query, key, value, call.layout, scale=scaling)  # [B, Hq, T, D]
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Register the attention function with transformers (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, _blockrank_attention_forward)


@contextlib.contextmanager
def blockrank_attention(model: Any) -> Iterator[None]:
    """Run `model` with BlockRank attention inside the block, restoring its attention implementation after."""
    register()
    previous = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION_NAME)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def pack_prompts(prompts: Sequence["BlockPrompt"], device: Any = None) -> tuple["torch.Tensor", "torch.Tensor", Any]:
    """input_ids and position_ids [B, T] (rows padded at the end with id 0 and position 0) and the kernel
    layout of the rows."""
    import torch

    from rankline.kernels import BlockLayout

    width = max(sum(p.lengths) for p in prompts)
    input_ids = torch.zeros(len(prompts), width, dtype=torch.long)
    position_ids = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids = prompt.input_ids()
        input_ids[row, : len(ids)] = torch.tensor(ids)
        position_ids[row, : len(ids)] = torch.tensor(prompt.position_ids())
    layout = BlockLayout.from_lists(
        [p.lengths[0] for p in prompts], [p.lengths[1:-1] for p in prompts], [p.lengths[-1] for p in prompts]
    )
    return input_ids.to(device), position_ids.to(device), layout


def forward_blocks(model: Any, prompts: Sequence["BlockPrompt"], *, layer: int | None,
                   scoring_tokens: int = 2) -> "torch.Tensor":
    """One forward pass of the base model over the packed prompts with BlockRank attention.

    With `layer` set, returns the scores [B, N_max] read at that layer (rows with fewer documents are
    zero-padded); with `layer=None`, runs every layer and returns the last hidden states [B, T, hidden]."""
    import torch

    device = next(model.parameters()).device
    input_ids, position_ids, layout = pack_prompts(prompts, device)
    ends = [sum(p.lengths) for p in prompts]
    call = BlockRankCall(layout=layout, layer=layer, query_index=[list(range(e - scoring_tokens, e)) for e in ends])
    with torch.inference_mode(), blockrank_attention(model):
        try:
            out = model.base_model(input_ids=input_ids, position_ids=position_ids, use_cache=False, blockrank=call)
        except _ScoresReady as ready:
            return ready.scores
    if layer is not None:
        raise RuntimeError(f"layer {layer} was never reached: the model has no such decoder layer")
    return out.last_hidden_state


def score_prompts(model: Any, prompts: Sequence["BlockPrompt"], *, layer: int, scoring_tokens: int = 2) -> list[list[float]]:
    """BlockRank scores of each prompt's documents, in block order (one forward pass for all prompts)."""
    scores = forward_blocks(model, prompts, layer=layer, scoring_tokens=scoring_tokens).float().cpu()
    return [scores[row, : p.num_docs].tolist() for row, p in enumerate(prompts)]
