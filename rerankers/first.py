"""FIRST (Reddy et al. 2024): single-token listwise reranking.

Each window is one prefill of the RankZephyr prompt followed by "["; the distribution of the next
token over the identifiers A, B, ... orders the whole window. Windows slide bottom-up (20/10/100 by
default) and the windows of different queries share forward passes (left padding; on an
accelerator by default, see `FirstReranker`).

`parity="rank_llm"` reproduces castorini rank_llm 0.26.0 (`RankListwiseOSLLM`, use_logits, use_alpha):
only identifiers among the 30 most probable tokens of the whole vocabulary are ranked (vLLM's
`logprobs=30`), the best of the token variants that decode to the same letter counts, and the other
passages keep their order after them; prompts are fitted by words only. The default mode ranks every
identifier by its log-probability and may also cut passages to a token budget.
"""
from __future__ import annotations

from typing import Any, Sequence

from rankline.rerankers.listwise import ListwiseReranker
from rankline.rerankers.models import CausalLM
from rankline.rerankers.prompts import MAX_IDENTIFIERS, identifier
from rankline.rerankers.ranking import WindowRequest, complete_permutation

PARITY_MODES = ("rank_llm",)
RANK_LLM_TOP_LOGPROBS = 30


def identifier_token_ids(tokenizer: Any) -> dict[int, int]:
    """token id -> window position (A=0, ..., Z=25) for every token that decodes to exactly one
    identifier letter (a vocabulary may hold several variants of a letter)."""
    decoded = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return {
        token_id: ord(text) - 65
        for token_id, text in enumerate(decoded)
        if len(text) == 1 and text.isalpha() and "A" <= text <= identifier(MAX_IDENTIFIERS - 1)
    }


def window_order(logprobs: Any, n: int, letter_of: dict[int, int], parity: str | None) -> list[int]:
    """The permutation of a window of n passages given the next-token log-probabilities (1-D, full vocab)."""
    import torch

    if parity == "rank_llm":
        top = torch.topk(logprobs, RANK_LLM_TOP_LOGPROBS)
        candidates = zip(top.indices.tolist(), top.values.tolist())
    else:
        ids = [i for i, pos in letter_of.items() if pos < n]
        candidates = zip(ids, logprobs[ids].tolist())
    best: dict[int, float] = {}
    for token_id, lp in candidates:
        pos = letter_of.get(token_id)
        if pos is not None and pos < n and (pos not in best or lp > best[pos]):
            best[pos] = lp
    ranked = sorted(best, key=lambda pos: -best[pos]) if parity else sorted(best, key=lambda pos: (-best[pos], pos))
    return complete_permutation(ranked, n)


class FirstReranker(ListwiseReranker):
    """FIRST over a causal LM; implements the `Reranker` protocol."""

    def __init__(
        self,
        lm: CausalLM,
        *,
        window: int = 20,
        stride: int = 10,
        depth: int = 100,
        batch_size: int | None = None,
        context_size: int = 4096,
        parity: str | None = None,
        progress: bool = False,
    ):
        """`batch_size` windows share a forward pass; by default 8 on an accelerator and 1 on the CPU,
        where a left-padded batch runs attention through the masked path and costs more than its
        windows one at a time (8 DL 2019 windows in bf16: 32.5 s batched by 8, 13.5 s one by one)."""
        if parity is not None and parity not in PARITY_MODES:
            raise ValueError(f"parity must be one of {PARITY_MODES}, got {parity!r}")
        if batch_size is None:
            batch_size = 1 if lm.device.type == "cpu" else 8
        super().__init__(lm, window=window, stride=stride, depth=depth, batch_size=batch_size,
                         context_size=context_size, progress=progress)
        self.parity = parity
        self.token_budget = parity is None  # rank_llm fits prompts by words only
        self._letter_of = identifier_token_ids(lm.tokenizer)

    def engine_input(self, request: WindowRequest) -> str:
        """The prompt followed by "[": the next token is the identifier of the best passage."""
        return self.prompt(request) + "["

    def rank_windows(self, requests: Sequence[WindowRequest]) -> list[list[int]]:
        """One prefill per window, `batch_size` windows per forward pass."""
        import torch

        perms: list[list[int]] = [[] for _ in requests]
        for chunk, batch in self.batches(requests):
            with torch.inference_mode():
                logits = self.lm.model(**batch.model_inputs(), logits_to_keep=1, use_cache=False).logits[:, -1, :]
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
            for row, i in enumerate(chunk):
                perms[i] = window_order(logprobs[row], len(requests[i].hits), self._letter_of, self.parity)
        return perms
