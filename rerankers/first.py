"""FIRST (Reddy et al. 2024): single-token listwise reranking.

Each window is one prefill of the RankZephyr prompt followed by "["; the distribution of the next
token over the identifiers A, B, ... orders the whole window. Windows slide bottom-up over every
candidate the reranker is given (window 20, stride 10 by default), and the windows of different queries
share forward passes (left padding; on an accelerator by default, see `FirstOptions`).

A window of more than 26 passages continues A..Z with identifiers that are each one token of the model's
tokenizer (`prompts.single_token_identifiers`), so the same one-token reading ranks them all; a window of at least
the depth (`--window 100` for the top 100) is one forward pass per query and no sliding, which a
linear-attention model (rerankers.linear) makes affordable. On such a model the pass reads the prompt in chunks of
`LINEAR_PREFILL_CHUNK` tokens, each continuing from the fixed-size state the previous one left (the layers' cache),
so its memory does not grow with the list beyond the token ids; the last token's logits are the one-pass ones.

`parity="rank_llm"` reproduces castorini rank_llm 0.26.0 (`RankListwiseOSLLM`, use_logits, use_alpha):
only identifiers among the 30 most probable tokens of the whole vocabulary are ranked (vLLM's
`logprobs=30`), the best of the token variants that decode to the same letter counts, and the other
passages keep their order after them; prompts are fitted by words only. The default mode ranks every
identifier by its log-probability and may also cut passages to a token budget.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from rankline.formats import Candidates
from rankline.rerankers.listwise import ListwiseOptions, ListwiseReranker, is_linearised_lm
from rankline.rerankers.models import CausalLM
from rankline.rerankers.prompts import LETTERS, MAX_IDENTIFIERS
from rankline.rerankers.ranking import complete_permutation

PARITY_MODES = ("rank_llm",)
RANK_LLM_TOP_LOGPROBS = 30
LINEAR_PREFILL_CHUNK = 2048  # tokens per forward call on a linearised model (module docstring)


def identifier_token_ids(tokenizer: Any, labels: Sequence[str] = LETTERS) -> dict[int, int]:
    """token id -> window position (labels[i] -> i; by default A=0, ..., Z=25) for every token that decodes to
    exactly one identifier (a vocabulary may hold several variants of a letter)."""
    position = {label: i for i, label in enumerate(labels)}
    decoded = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return {token_id: position[text] for token_id, text in enumerate(decoded) if text in position}


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


@dataclass(frozen=True)
class FirstOptions(ListwiseOptions):
    """ListwiseOptions, batching by device by default (8 DL 2019 windows on the CPU in bf16: 32.5 s batched
    by 8, 13.5 s one by one), and `parity="rank_llm"` for rank_llm's exact behaviour (module docstring)."""

    batch_size: int | None = None
    parity: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.parity is not None and self.parity not in PARITY_MODES:
            raise ValueError(f"parity must be one of {PARITY_MODES}, got {self.parity!r}")
        if self.parity == "rank_llm" and self.window > MAX_IDENTIFIERS:
            raise ValueError(f"window must be <= {MAX_IDENTIFIERS} with parity rank_llm (its passages are labelled "
                             f"A..Z), got {self.window}")


class FirstReranker(ListwiseReranker):
    """FIRST over a causal LM; implements the `Reranker` protocol."""

    Options = FirstOptions
    options: FirstOptions

    def __init__(self, lm: CausalLM, options: FirstOptions | None = None):
        super().__init__(lm, options)
        self.token_budget = self.options.parity is None  # rank_llm fits prompts by words only
        # every letter, as before, for windows of up to 26 (positions beyond the window are ignored anyway)
        self._letter_of = identifier_token_ids(lm.tokenizer, max(self.labels, LETTERS, key=len))
        self._linear = is_linearised_lm(lm)

    def engine_input(self, window: Candidates) -> str:
        """The prompt followed by "[": the next token is the identifier of the best passage."""
        return self.prompt(window) + "["

    def rank_windows(self, windows: Sequence[Candidates]) -> list[list[int]]:
        """One prefill per window, `batch_size` windows per forward pass."""
        import torch

        perms: list[list[int]] = [[] for _ in windows]
        for chunk, batch in self.batches(windows):
            with torch.inference_mode():
                if self._linear and bool(batch.attention_mask.all()):
                    logits = self._chunked_last_logits(batch.input_ids)
                else:
                    logits = self.lm.model(**batch.model_inputs(), logits_to_keep=1, use_cache=False).logits[:, -1, :]
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
            for row, i in enumerate(chunk):
                perms[i] = window_order(logprobs[row], len(windows[i].hits), self._letter_of, self.options.parity)
        return perms

    def _chunked_last_logits(self, input_ids: Any) -> Any:
        """The last token's logits of unpadded rows on a linearised model, read LINEAR_PREFILL_CHUNK tokens at a
        time, each chunk continuing from the state the previous one left in the cache."""
        from transformers import DynamicCache

        import torch

        cache = DynamicCache(config=self.lm.model.config)
        for start in range(0, input_ids.shape[1], LINEAR_PREFILL_CHUNK):
            part = input_ids[:, start:start + LINEAR_PREFILL_CHUNK]
            # every key is real: a 4-D mask goes through transformers as it is, and the linearised layers read only
            # its last row, so no [chunk, prefix + chunk] causal mask (growing with the prompt) is built
            real = torch.ones(part.shape[0], 1, 1, part.shape[1], dtype=torch.bool, device=part.device)
            out = self.lm.model(input_ids=part, attention_mask=real, cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :]
