"""BlockRank's structured attention inside any transformers causal LM that dispatches through
`AttentionInterface` (Llama, Mistral, Qwen2/3, SmolLM, ...).

`rankline_blockrank` is registered as an attention function. While `blockrank_attention(model)` is active the
model runs it in every layer, and what it does is given by the `blockrank` keyword of the forward call (a
`_Pass`). Since this implementation has no mask function, transformers builds no attention mask at all.

`score_prompts` streams each prompt through the model. Documents attend only to the instruction and to
themselves, so a row [instruction | a few documents] computes their states exactly as the whole prompt
would. Stage 1 runs such rows of at most `chunk_tokens` tokens through the layers up to the scoring layer
and keeps each layer's keys and values of the documents (and the instruction) in a per-prompt cache. Stage 2
runs the query blocks alone, attending to the cache and causally to themselves, and at the scoring layer
reads the scores with `block_attention_scores`' formula from the cached document keys. Every activation is
then sized by the chunk, not by the prompt, so the time per document stays flat from 20 to 500+ documents
(whole 50k-token prompts fall out of the CPU caches and allocator fast paths and cost ~1.4x more per token).
The scoring layer's output and all later layers are never computed (the reference replaces them by
identities, which gives the same scores at a higher cost).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

if TYPE_CHECKING:
    import torch

    from rankline.rerankers.blockrank import BlockPrompt

ATTENTION_NAME = "rankline_blockrank"


class _Stop(Exception):
    """Raised by the attention function to end a forward pass early; carries the scores when it has them."""

    def __init__(self, scores: "list[list[float]] | None" = None):
        super().__init__("BlockRank pass done")
        self.scores = scores


class _Pass:
    """What the attention function does in one forward pass, which ends at layer `last` (the scoring layer)."""

    last: int

    def attend(self, layer: int, query: "torch.Tensor", key: "torch.Tensor", value: "torch.Tensor",
               scale: float) -> "torch.Tensor":
        """The attention output [B, Hq, T, D] of `layer`, or raise _Stop."""
        raise NotImplementedError


@dataclass
class _PromptCache:
    """Keys and values [layers, Hkv, T, D] of one prompt's T tokens for layers 0..last, the scoring layer
    (values up to last - 1: the scoring layer needs only keys). Stage 1 fills the instruction and the
    documents (the first `prefix_len` tokens), stage 2 the query block after them."""

    prompt: "BlockPrompt"
    keys: "torch.Tensor | None" = None
    values: "torch.Tensor | None" = None

    @property
    def prefix_len(self) -> int:
        return sum(self.prompt.lengths[:-1])

    def write(self, layer: int, last: int, start: int, key: "torch.Tensor", value: "torch.Tensor") -> None:
        """Store key/value [Hkv, n, D] of the prompt's tokens start..start+n-1."""
        import torch

        if self.keys is None:
            shape = (last + 1, key.shape[0], sum(self.prompt.lengths), key.shape[-1])
            self.keys = torch.empty(shape, dtype=key.dtype, device=key.device)
            self.values = torch.empty((last, *shape[1:]), dtype=value.dtype, device=value.device)
        self.keys[layer, :, start:start + key.shape[1]] = key
        if layer < last:
            self.values[layer, :, start:start + value.shape[1]] = value


@dataclass
class _DocumentRows(_Pass):
    """Stage 1: rows [instruction | documents lo..hi-1 of one prompt]; their keys and values go to the
    prompt's cache; the pass stops once the scoring layer's keys are stored."""

    layout: Any
    rows: list[tuple[_PromptCache, int]]  # the prompt's cache, the prompt position of the row's first document token
    last: int  # the scoring layer

    def attend(self, layer, query, key, value, scale):
        from rankline.kernels import block_attention

        for row, ((cache, start), n_instr, docs) in enumerate(zip(self.rows, self.layout.instruction, self.layout.docs)):
            end = n_instr + sum(docs)
            cache.write(layer, self.last, 0, key[row, :, :n_instr], value[row, :, :n_instr])
            cache.write(layer, self.last, start, key[row, :, n_instr:end], value[row, :, n_instr:end])
        if layer == self.last:
            raise _Stop
        return block_attention(query, key, value, self.layout, scale=scale)


@dataclass
class _QueryRows(_Pass):
    """Stage 2: every prompt's query block alone (rows padded at the end); its keys and values join its
    prompt's cache, and it attends to the cache and causally to itself; at the scoring layer the last `scoring_tokens` query tokens read the scores."""

    caches: list[_PromptCache]
    last: int
    scoring_tokens: int
    scores: list[list[float]] = field(default_factory=list)

    def attend(self, layer, query, key, value, scale):
        import torch
        import torch.nn.functional as F

        from rankline.kernels import document_attention_scores

        out = query.new_zeros(query.shape)
        for row, cache in enumerate(self.caches):
            n, p, n_instr = cache.prompt.lengths[-1], cache.prefix_len, cache.prompt.lengths[0]
            q = query[row:row + 1, :, :n]
            if layer == self.last:
                picked = q[:, :, n - self.scoring_tokens:]
                docs = cache.keys[layer, None, :, n_instr:p]
                scores = document_attention_scores(picked, docs, [cache.prompt.lengths[1:-1]], scale=scale)
                self.scores.append(scores[0].tolist())
                continue
            cache.write(layer, self.last, p, key[row, :, :n], value[row, :, :n])
            keys, values = cache.keys[layer, None, :, :p + n], cache.values[layer, None, :, :p + n]
            i, j = torch.arange(n, device=q.device)[:, None], torch.arange(p + n, device=q.device)[None, :]
            mask = j <= p + i
            out[row:row + 1, :, :n] = F.scaled_dot_product_attention(
                q, keys, values, attn_mask=mask, scale=scale, enable_gqa=q.shape[1] != keys.shape[1])
        if layer == self.last:
            raise _Stop(self.scores)
        return out


def _blockrank_attention_forward(module: Any, query: "torch.Tensor", key: "torch.Tensor", value: "torch.Tensor",
                                 attention_mask: Any, scaling: float, dropout: float = 0.0, **kwargs: Any):
    call: _Pass | None = kwargs.get("blockrank")
    if call is None:
        raise RuntimeError(
            f"attention implementation {ATTENTION_NAME!r} needs the block layout: call the model through "
            "rankline.rerankers.blockrank_attention.score_prompts"
        )
    out = call.attend(module.layer_idx, query, key, value, scaling)  # [B, Hq, T, D]
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


def _pack(rows: Sequence[tuple[Sequence[int], Sequence[int]]], device: Any) -> tuple["torch.Tensor", "torch.Tensor"]:
    """input_ids and position_ids [B, T] of (ids, positions) rows, padded at the end with id 0 and position 0."""
    import torch

    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)
    position_ids = torch.zeros(len(rows), width, dtype=torch.long)
    for row, (ids, positions) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        position_ids[row, : len(ids)] = torch.tensor(positions)
    return input_ids.to(device), position_ids.to(device)


def _run(model: Any, rows: Sequence[tuple[Sequence[int], Sequence[int]]], call: _Pass) -> "list[list[float]] | None":
    """One forward pass of the base model over `rows` with BlockRank attention doing `call`, up to its
    scoring layer: the scores the pass ends with (None in stage 1)."""
    import torch

    input_ids, position_ids = _pack(rows, next(model.parameters()).device)
    with torch.inference_mode(), blockrank_attention(model):
        try:
            model.base_model(input_ids=input_ids, position_ids=position_ids, use_cache=False, blockrank=call)
        except _Stop as stop:
            return stop.scores
    raise RuntimeError(f"layer {call.last} was never reached: the model has no such decoder layer")


def _document_chunks(prompts: Sequence["BlockPrompt"], chunk_tokens: int) -> list[list[tuple[int, int, int]]]:
    """Stage 1's forward passes, each a list of rows (prompt, first document, end document): consecutive
    documents of one prompt after its instruction, and rows grouped so a pass holds at most `chunk_tokens`
    tokens with padding (a single longer row gets a pass of its own)."""
    rows: list[tuple[int, int, int, int]] = []
    for i, prompt in enumerate(prompts):
        n_instr, docs = prompt.lengths[0], prompt.lengths[1:-1]
        lo = 0
        if not docs:
            rows.append((i, 0, 0, n_instr))  # the query block still attends to the instruction
        while lo < len(docs):
            hi, size = lo + 1, n_instr + docs[lo]
            while hi < len(docs) and size + docs[hi] <= chunk_tokens:
                size, hi = size + docs[hi], hi + 1
            rows.append((i, lo, hi, size))
            lo = hi
    passes: list[list[tuple[int, int, int]]] = []
    width = 0
    for i, lo, hi, size in rows:
        if passes and max(width, size) * (len(passes[-1]) + 1) <= chunk_tokens:
            width = max(width, size)
            passes[-1].append((i, lo, hi))
        else:
            width = size
            passes.append([(i, lo, hi)])
    return passes


def score_prompts(model: Any, prompts: Sequence["BlockPrompt"], *, layer: int, scoring_tokens: int,
                  chunk_tokens: int) -> list[list[float]]:
    """BlockRank scores of each prompt's documents, in block order: stage 1 streams the documents in
    passes of at most `chunk_tokens` tokens, stage 2 runs all query blocks in one pass. The prompts come
    from `build_prompt`, which guarantees each query block at least `scoring_tokens` tokens."""
    from rankline.kernels import BlockLayout

    caches = [_PromptCache(p) for p in prompts]
    ids = [p.input_ids() for p in prompts]
    positions = [p.position_ids() for p in prompts]
    for chunk in _document_chunks(prompts, chunk_tokens):
        rows, targets, docs = [], [], []
        for i, lo, hi in chunk:
            lengths = prompts[i].lengths
            n_instr = lengths[0]
            start = n_instr + sum(lengths[1:1 + lo])
            end = start + sum(lengths[1 + lo:1 + hi])
            rows.append((ids[i][:n_instr] + ids[i][start:end], positions[i][:n_instr] + positions[i][start:end]))
            targets.append((caches[i], start))
            docs.append(lengths[1 + lo:1 + hi])
        layout = BlockLayout.from_lists([prompts[i].lengths[0] for i, _, _ in chunk], docs, [0] * len(chunk))
        _run(model, rows, _DocumentRows(layout, targets, layer))
    queries = [(row_ids[-p.lengths[-1]:], pos[-p.lengths[-1]:]) for row_ids, pos, p in zip(ids, positions, prompts)]
    return _run(model, queries, _QueryRows(caches, layer, scoring_tokens))
