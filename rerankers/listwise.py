"""Listwise reranking over sliding windows of the RankZephyr prompt, and the listwise generation baseline.

`ListwiseReranker` is what FIRST and the generation baseline share: the prompt of a window (fitted to
the context), the sliding-window schedule, and forward-pass batches of windows from different queries
(length-sorted, left-padded). `ListwiseGenerationReranker` (RankZephyr style) lets the model write
"[B] > [A] > ..." for each window, then parses and repairs it (repeats and unknown identifiers dropped,
missing passages appended in their current order), so it differs from FIRST only in generating the
whole answer instead of reading one token's distribution.
"""
from __future__ import annotations

import re
from typing import Any, Iterator, Sequence

from rankline.rerankers.batching import LeftPadded, left_pad, length_sorted_chunks
from rankline.rerankers.models import CausalLM
from rankline.rerankers.prompts import MAX_IDENTIFIERS, Passage, fit_listwise_prompt, ranking_output_tokens
from rankline.rerankers.ranking import SlidingWindow, WindowRequest, complete_permutation, rerank_sliding
from rankline.formats import Hit, Query

_IDENTIFIER = re.compile(r"\[\s*([A-Z])\s*\]")


def parse_ranking(text: str, n: int) -> list[int]:
    """The permutation of n passages that a generated "[C] > [A] > ..." describes, repaired."""
    return complete_permutation([ord(m) - 65 for m in _IDENTIFIER.findall(text)], n)


class ListwiseReranker:
    """Sliding windows of the listwise prompt; subclasses order a batch of windows in `rank_windows`."""

    def __init__(
        self,
        lm: CausalLM,
        *,
        window: int = 20,
        stride: int = 10,
        depth: int = 100,
        batch_size: int = 8,
        context_size: int = 4096,
        progress: bool = False,
    ):
        if window > MAX_IDENTIFIERS:
            raise ValueError(f"passages are labelled A..Z: window must be <= {MAX_IDENTIFIERS}, got {window}")
        self.lm = lm
        self.schedule = SlidingWindow(window, stride, depth)
        self.batch_size = batch_size
        max_positions = getattr(lm.model.config, "max_position_embeddings", None) or context_size
        self.context_size = min(context_size, max_positions)
        self.progress = progress
        self.token_budget = True  # cut passages to a token budget where word capping cannot fit a window

    def prompt(self, request: WindowRequest) -> str:
        """The rendered chat prompt of a window, fitted into the context."""
        passages = [Passage(h.text, h.title) for h in request.hits]
        return fit_listwise_prompt(self.lm.tokenizer, request.query.text, passages,
                                   context_size=self.context_size, token_budget=self.token_budget)

    def engine_input(self, request: WindowRequest) -> str:
        """What the model reads for a window (the prompt; FIRST appends "[")."""
        return self.prompt(request)

    def batches(self, requests: Sequence[WindowRequest]) -> Iterator[tuple[list[int], LeftPadded]]:
        """(request indices, left-padded batch) of at most `batch_size` windows of similar length."""
        tokenizer = self.lm.tokenizer
        encoded = [tokenizer.encode(self.engine_input(r)) for r in requests]
        for chunk in length_sorted_chunks([len(e) for e in encoded], self.batch_size):
            yield chunk, left_pad([encoded[i] for i in chunk], tokenizer.pad_token_id, self.lm.device)

    def rank_windows(self, requests: Sequence[WindowRequest]) -> list[list[int]]:
        raise NotImplementedError

    def rerank(self, query: Query, hits: Sequence[Hit]) -> list[Hit]:
        return self.rerank_batch([query], [hits])[0]

    def rerank_batch(self, queries: Sequence[Query], hits: Sequence[Sequence[Hit]]) -> list[list[Hit]]:
        return rerank_sliding(queries, hits, self.rank_windows, self.schedule, progress=self.progress)


class ListwiseGenerationReranker(ListwiseReranker):
    """Greedy generation of the full ranking per window; implements the `Reranker` protocol."""

    def rank_windows(self, requests: Sequence[WindowRequest]) -> list[list[int]]:
        import torch

        tokenizer = self.lm.tokenizer
        perms: list[list[int]] = [[] for _ in requests]
        for chunk, batch in self.batches(requests):
            max_new = max(ranking_output_tokens(tokenizer, len(requests[i].hits)) for i in chunk)
            with torch.inference_mode():
                out: Any = self.lm.model.generate(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=max_new,
                    do_sample=False, pad_token_id=tokenizer.pad_token_id,
                )
            answers = tokenizer.batch_decode(out[:, batch.input_ids.shape[1]:], skip_special_tokens=True)
            for i, answer in zip(chunk, answers):
                perms[i] = parse_ranking(answer, len(requests[i].hits))
        return perms
