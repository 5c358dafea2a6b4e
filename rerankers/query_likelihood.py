"""Pointwise query-likelihood baseline (UPR, Sachan et al. 2022): a passage scores the mean
log-probability of the query's tokens given the passage and the instruction "Please write a question
based on this passage". Every (query, passage) pair is one sequence; pairs of all queries in a batch
share forward passes."""
from __future__ import annotations

from typing import Sequence

from rankline.rerankers.batching import left_pad, length_sorted_chunks
from rankline.rerankers.models import CausalLM
from rankline.rerankers.prompts import Passage, query_likelihood_prompt
from rankline.rerankers.ranking import with_rank_scores
from rankline.formats import Hit, Query


class QueryLikelihoodReranker:
    """UPR over a causal LM; implements the `Reranker` protocol."""

    def __init__(self, lm: CausalLM, *, depth: int = 100, batch_size: int = 16, progress: bool = False):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.lm = lm
        self.depth = depth
        self.batch_size = batch_size
        self.progress = progress

    def score_batch(self, queries: Sequence[Query], hits: Sequence[Sequence[Hit]]) -> list[list[float]]:
        """log p(query | passage), averaged over the query's tokens, for every hit (input order)."""
        import torch
        from tqdm.auto import tqdm

        tokenizer = self.lm.tokenizer
        pairs: list[tuple[int, int]] = []  # (query index, hit index)
        sequences: list[list[int]] = []
        query_ids = [tokenizer.encode(q.text, add_special_tokens=False) for q in queries]
        for qi, (query, hit_list) in enumerate(zip(queries, hits)):
            if not query_ids[qi]:
                raise ValueError(f"query {query.qid!r} has no tokens to score")
            for hi, hit in enumerate(hit_list):
                prompt = tokenizer.encode(query_likelihood_prompt(tokenizer, Passage(hit.text, hit.title)))
                pairs.append((qi, hi))
                sequences.append(prompt + query_ids[qi])
        scores = [[0.0] * len(h) for h in hits]
        chunks = length_sorted_chunks([len(s) for s in sequences], self.batch_size)
        for chunk in tqdm(chunks, desc="query likelihood", unit="batch", disable=not self.progress, leave=False):
            batch = left_pad([sequences[i] for i in chunk], tokenizer.pad_token_id, self.lm.device)
            keep = max(len(query_ids[pairs[i][0]]) for i in chunk) + 1
            with torch.inference_mode():
                logits = self.lm.model(**batch.model_inputs(), logits_to_keep=keep, use_cache=False).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
            for row, i in enumerate(chunk):
                qi, hi = pairs[i]
                target = torch.tensor(query_ids[qi])
                predicted = logprobs[row, keep - 1 - len(target) : keep - 1]  # positions that predict the query
                scores[qi][hi] = predicted.gather(1, target[:, None]).mean().item()
        return scores

    def rerank(self, query: Query, hits: Sequence[Hit]) -> list[Hit]:
        return self.rerank_batch([query], [hits])[0]

    def rerank_batch(self, queries: Sequence[Query], hits: Sequence[Sequence[Hit]]) -> list[list[Hit]]:
        heads = [list(h[: self.depth]) for h in hits]
        scores = self.score_batch(queries, heads)
        out = []
        for head, head_scores, hit_list in zip(heads, scores, hits):
            order = sorted(range(len(head)), key=lambda i: (-head_scores[i], i))
            out.append(with_rank_scores([head[i] for i in order] + list(hit_list[self.depth:])))
        return out
