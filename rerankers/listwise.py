"""Listwise generation baseline (RankZephyr style): the model writes "[B] > [A] > ..." for each window,
which is parsed and repaired (repeats and unknown identifiers dropped, missing passages appended in
their current order). Same prompt, windows and batching as FIRST, so the two differ only in
generating the whole answer instead of reading one token's distribution."""
from __future__ import annotations

import re
from typing import Sequence

from rankline.rerankers.batching import left_pad, length_sorted_chunks
from rankline.rerankers.models import CausalLM
from rankline.rerankers.prompts import MAX_IDENTIFIERS, Passage, fit_listwise_prompt, ranking_output_tokens
from rankline.rerankers.ranking import SlidingWindow, WindowRequest, complete_permutation, rerank_sliding
from rankline.retrieval.types import Hit, Query

_IDENTIFIER = re.compile(r"\[\s*([A-Z])\s*\]")


def parse_ranking(text: str, n: int) -> list[int]:
    """The permutation of n passages that a generated "[C] > [A] > ..." describes, repaired."""
    return complete_permutation([ord(m) - 65 for m in _IDENTIFIER.findall(text)], n)


class ListwiseGenerationReranker:
    """Greedy generation of the full ranking per window; implements the `Reranker` protocol."""

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
            raise ValueError(f"listwise generation labels passages A..Z: window must be <= {MAX_IDENTIFIERS}, got {window}")
        self.lm = lm
        self.schedule = SlidingWindow(window, stride, depth)
        self.batch_size = batch_size
        max_positions = getattr(lm.model.config, "max_position_embeddings", None) or context_size
        self.context_size = min(context_size, max_positions)
        self.progress = progress

    def prompt(self, request: WindowRequest) -> str:
        passages = [Passage(h.text, h.title) for h in request.hits]
        return fit_listwise_prompt(self.lm.tokenizer, request.query.text, passages, context_size=self.context_size)

    def rank_windows(self, requests: Sequence[WindowRequest]) -> list[list[int]]:
        import torch

        tokenizer = self.lm.tokenizer
        encoded = [tokenizer.encode(self.prompt(r)) for r in requests]
        perms: list[list[int]] = [[] for _ in requests]
        for chunk in length_sorted_chunks([len(e) for e in encoded], self.batch_size):
            batch = left_pad([encoded[i] for i in chunk], tokenizer.pad_token_id, self.lm.device)
            max_new = max(ranking_output_tokens(tokenizer, len(requests[i].hits)) for i in chunk)
            with torch.inference_mode():
                out = self.lm.model.generate(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=max_new,
                    do_sample=False, pad_token_id=tokenizer.pad_token_id,
                )
            answers = tokenizer.batch_decode(out[:, batch.input_ids.shape[1]:], skip_special_tokens=True)
            for i, answer in zip(chunk, answers):
                perms[i] = parse_ranking(answer, len(requests[i].hits))
        return perms

    def rerank(self, query: Query, hits: Sequence[Hit]) -> list[Hit]:
        return self.rerank_batch([query], [hits])[0]

    def rerank_batch(self, queries: Sequence[Query], hits: Sequence[Sequence[Hit]]) -> list[list[Hit]]:
        return rerank_sliding(queries, hits, self.rank_windows, self.schedule, progress=self.progress)
