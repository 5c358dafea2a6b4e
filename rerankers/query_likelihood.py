"""Pointwise query-likelihood baseline (UPR, Sachan et al. 2022): a passage scores the mean
log-probability of the query's tokens given the passage and the instruction "Please write a question
based on this passage". Every (query, passage) pair is one sequence; pairs of all queries in a batch
share forward passes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

from rankline.formats import Candidates, Hit
from rankline.rerankers.batching import left_pad, length_sorted_chunks
from rankline.rerankers.base import PyTerrierReranker
from rankline.rerankers.models import CausalLM
from rankline.rerankers.prompts import Passage, query_likelihood_prompt
from rankline.rerankers.ranking import order_hits


@dataclass(frozen=True)
class QueryLikelihoodOptions:
    """batch_size: (query, passage) sequences per forward pass; progress: a bar over the batches."""

    batch_size: int = 16
    progress: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


class QueryLikelihoodReranker(PyTerrierReranker):
    """UPR over a causal LM; implements the `Reranker` protocol. Output scores are the query likelihoods."""

    Options: ClassVar[type[QueryLikelihoodOptions]] = QueryLikelihoodOptions

    def __init__(self, lm: CausalLM, options: QueryLikelihoodOptions | None = None):
        self.lm = lm
        self.options = options or QueryLikelihoodOptions()

    def score_batch(self, lists: Sequence[Candidates]) -> list[list[float]]:
        """log p(query | passage), averaged over the query's tokens, for every hit (input order)."""
        import torch
        from tqdm.auto import tqdm

        tokenizer = self.lm.tokenizer
        pairs: list[tuple[int, int]] = []  # (query index, hit index)
        sequences: list[list[int]] = []
        query_ids = [tokenizer.encode(c.query.text, add_special_tokens=False) for c in lists]
        for qi, candidates in enumerate(lists):
            if not query_ids[qi]:
                raise ValueError(f"query {candidates.query.qid!r} has no tokens to score")
            for hi, hit in enumerate(candidates.hits):
                prompt = tokenizer.encode(query_likelihood_prompt(tokenizer, Passage(hit.text, hit.title)))
                pairs.append((qi, hi))
                sequences.append(prompt + query_ids[qi])
        scores = [[0.0] * len(c.hits) for c in lists]
        chunks = length_sorted_chunks([len(s) for s in sequences], self.options.batch_size)
        bar = tqdm(chunks, desc="query likelihood", unit="batch", disable=not self.options.progress, leave=False)
        for chunk in bar:
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

    def rerank_batch(self, lists: Sequence[Candidates]) -> list[list[Hit]]:
        return [order_hits(c.hits, s) for c, s in zip(lists, self.score_batch(lists))]
