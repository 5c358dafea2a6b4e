"""Listwise reranking over sliding windows of the RankZephyr prompt, and the listwise generation baseline.

`ListwiseReranker` is what FIRST and the generation baseline share: the prompt of a window (fitted to
the context), the sliding-window schedule over every candidate it is given, and forward-pass batches of
windows from different queries (length-sorted, left-padded). `ListwiseGenerationReranker` (RankZephyr
style) lets the model write "[B] > [A] > ..." for each window, then parses and repairs it (repeats and
unknown identifiers dropped, missing passages appended in their current order), so it differs from FIRST
only in generating the whole answer instead of reading one token's distribution.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Sequence

from rankline.formats import Candidates, Hit
from rankline.rerankers.batching import LeftPadded, left_pad, length_sorted_chunks
from rankline.rerankers.base import PyTerrierReranker
from rankline.rerankers.models import CausalLM
from rankline.rerankers.prompts import (LETTERS, Passage, fit_listwise_prompt, ranking_output_tokens,
                                        single_token_identifiers)
from rankline.rerankers.ranking import SlidingWindow, complete_permutation, rerank_sliding

DEFAULT_STRIDE = 10  # rank_llm's step
_IDENTIFIER = re.compile(r"\[\s*([A-Za-z]+)\s*\]")


def parse_ranking(text: str, n: int, labels: Sequence[str] = LETTERS) -> list[int]:
    """The permutation of n passages that a generated "[C] > [A] > ..." describes (passage i labelled
    labels[i]), repaired."""
    position = {label: i for i, label in enumerate(labels)}
    return complete_permutation([position.get(m, n) for m in _IDENTIFIER.findall(text)], n)


@dataclass(frozen=True)
class ListwiseOptions:
    """window / stride: the sliding window (passages per prompt, and how far it moves up; the stride
    defaults to rank_llm's 10, or to the window when that is smaller, and may not exceed the window; a window of
    at least the depth is one prompt per query, no sliding; beyond 26 passages the reranker labels them with
    single-token identifiers of its tokenizer and refuses, when it loads, a window the tokenizer cannot label);
    batch_size: windows per forward pass (None: 1 on the CPU, where a left-padded batch runs attention
    through the masked path and costs more than its windows one at a time, 8 on an accelerator);
    context_size: the prompt's token budget (capped by the model's); progress: a bar over the windows.
    Every value is checked here, so `build_reranker` refuses a bad one before the model loads."""

    window: int = 20
    stride: int | None = None
    batch_size: int | None = 8
    context_size: int = 4096
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("window", "stride", "context_size"):
            value = getattr(self, name)
            if not (value is None and name == "stride") and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.stride is None:
            object.__setattr__(self, "stride", min(DEFAULT_STRIDE, self.window))
        SlidingWindow(self.window, self.stride)  # window and stride >= 1, stride <= window
        for name in ("batch_size", "context_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")


def is_linearised_lm(lm: CausalLM) -> bool:
    """Whether the model's attention was linearised (rerankers.linear)."""
    from rankline.rerankers.linear.llama import LinearisedLlamaAttention

    return any(isinstance(m, LinearisedLlamaAttention) for m in lm.model.modules())


class ListwiseReranker(PyTerrierReranker):
    """Sliding windows of the listwise prompt; subclasses order a batch of windows in `rank_windows`."""

    Options: ClassVar[type[ListwiseOptions]] = ListwiseOptions
    token_budget = True  # cut passages to a token budget where word capping cannot fit a window

    def __init__(self, lm: CausalLM, options: ListwiseOptions | None = None):
        options = options or self.Options()
        self.lm = lm
        self.options = options
        self.schedule = SlidingWindow(options.window, options.stride)
        self.batch_size = options.batch_size or (1 if lm.device.type == "cpu" else 8)
        self.labels = single_token_identifiers(lm.tokenizer, options.window)  # A..Z up to 26
        max_positions = getattr(lm.model.config, "max_position_embeddings", None) or options.context_size
        # a linearised model's attention has no trained length limit (its softmax part spans a short window)
        self.context_size = options.context_size if is_linearised_lm(lm) else min(options.context_size, max_positions)

    def prompt(self, window: Candidates) -> str:
        """The rendered chat prompt of a window, fitted into the context."""
        passages = [Passage(h.text, h.title) for h in window.hits]
        return fit_listwise_prompt(self.lm.tokenizer, window.query.text, passages, context_size=self.context_size,
                                   token_budget=self.token_budget, labels=self.labels)

    def engine_input(self, window: Candidates) -> str:
        """What the model reads for a window (the prompt; FIRST appends "[")."""
        return self.prompt(window)

    def batches(self, windows: Sequence[Candidates]) -> Iterator[tuple[list[int], LeftPadded]]:
        """(window indices, left-padded batch) of at most `batch_size` windows of similar length."""
        tokenizer = self.lm.tokenizer
        encoded = [tokenizer.encode(self.engine_input(w)) for w in windows]
        for chunk in length_sorted_chunks([len(e) for e in encoded], self.batch_size):
            yield chunk, left_pad([encoded[i] for i in chunk], tokenizer.pad_token_id, self.lm.device)

    def rank_windows(self, windows: Sequence[Candidates]) -> list[list[int]]:
        raise NotImplementedError

    def rerank_batch(self, lists: Sequence[Candidates]) -> list[list[Hit]]:
        return rerank_sliding(lists, self.rank_windows, self.schedule, progress=self.options.progress)


class ListwiseGenerationReranker(ListwiseReranker):
    """Greedy generation of the full ranking per window; implements the `Reranker` protocol."""

    def generate(self, windows: Sequence[Candidates]) -> list[list[int]]:
        """The greedily generated answer of each window, as token ids: at most the tokens of the longest
        ranking of its passages (whatever the batch), up to the end-of-sequence token."""
        import torch

        tokenizer = self.lm.tokenizer
        eos = self.lm.model.generation_config.eos_token_id
        stop = set(eos if isinstance(eos, list) else [eos])
        limits = [ranking_output_tokens(tokenizer, len(w.hits), self.labels) for w in windows]
        answers: list[list[int]] = [[] for _ in windows]
        for chunk, batch in self.batches(windows):
            with torch.inference_mode():
                out: Any = self.lm.model.generate(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    max_new_tokens=max(limits[i] for i in chunk), do_sample=False, pad_token_id=tokenizer.pad_token_id,
                )
            for row, i in enumerate(chunk):
                ids = out[row, batch.input_ids.shape[1]:].tolist()[: limits[i]]
                answers[i] = ids[: next((k for k, t in enumerate(ids) if t in stop), len(ids))]
        return answers

    def rank_windows(self, windows: Sequence[Candidates]) -> list[list[int]]:
        texts = self.lm.tokenizer.batch_decode(self.generate(windows), skip_special_tokens=True)
        return [parse_ranking(text, len(w.hits), self.labels) for text, w in zip(texts, windows)]
