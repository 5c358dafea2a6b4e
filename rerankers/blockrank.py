"""BlockRank: blockwise in-context reranking read from attention (Gupta et al. 2025, "Scalable In-context
Ranking with Generative Models"; official code nilesh2797/BlockRank, its `scripts/eval_attn.py` mode).

The prompt is an instruction block (which contains the query), one block per candidate
(`ID: i | CONTENT: ... | END ID: i`) and a query block ending in `Final Answer: [`. Candidates attend to the
instruction and causally to themselves, the query block attends to everything, and every candidate block
starts at the same position id. A candidate's relevance is the attention mass that the last query tokens
put on its block at one middle layer; the layers after it are never run. Nothing here limits the number
of candidates: the attention cost is linear in it (see `rankline.rerankers.blockrank_attention`).

Block construction, tokenisation, truncation, position ids and scoring follow the official code exactly as
documented in ../shared/fixtures/blockrank-parity/README.md; the parity tests check our scores against it.
Two deliberate differences, neither of which changes a score: blocks are packed instead of left-padded to
a common size (padding never takes part in attention), and blocks are built directly, so the separator
text inside a document cannot split it.

Zero-shot calibration (Chen et al., ICLR 2025, "Attention in Large Language Models Yields Efficient Zero-Shot
Re-Rankers"): with `calibrate=True` the score is `score(query) - score(content-free query)`, which removes
the part of the attention explained by a passage's position and length rather than by the query.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Sequence

from rankline.formats import Candidates, Hit
from rankline.rerankers.base import PyTerrierReranker
from rankline.rerankers.models import CausalLM
from rankline.rerankers.ranking import order_hits

# The official prompt (src/blockrank/dataset.py), verbatim.
INSTRUCTION = (
    "You will be given a query and a list of documents. Each document will be formatted as ID: <id> | "
    "CONTENT: <content> | END ID: <id>. You need to read carefully and understand all of them and your goal "
    "is to find all document(s) from the list that can help answer the query."
)
FINAL_SECTION = (
    "\n====== Now let's start! ======\nWhich document is most relevant to answer the query? Print out the ID "
    "of the document.\nQuery: {query}\nThe following document(s) can help answer the query:"
)
ANSWER_PREFIX = "Final Answer: "
ANSWER_OPEN = "["
SEPARATOR = "<<end_of_block_prompt_segment>>"
# The official default scoring layer, chosen for 32-layer Mistral-7B; scaled to other numbers of layers.
REFERENCE_LAYER, REFERENCE_LAYERS = 20, 32
# The content-free query of the ICLR 2025 calibration.
CALIBRATION_QUERY = "N/A"


@dataclass(frozen=True)
class BlockRankOptions:
    """Every knob of the method; the defaults are the official code's (configs/eval_mistral.yaml,
    dataset.py, losses.py).

    layer: decoder layer (0-based) whose attention gives the scores; None = the official 20 of 32 scaled to
        the model's number of layers.
    max_block_tokens: block size cap; every block keeps its first H tokens, H the longest block rounded
        up to `pad_to_multiple_of` and capped by this (also rounded up).
    query_offset: first position id of the query block.
    scoring_query_tokens: how many of the query block's last tokens (ending in `[`) read the scores.
    calibrate / calibration_query: subtract the scores obtained with a content-free query.
    batch_size: queries scored together (a calibrated query takes two prompts).
    chunk_tokens: tokens per forward pass while the documents stream through the layers (see
        rankline.rerankers.blockrank_attention); small enough for the CPU caches, raise it on a GPU.
    """

    layer: int | None = None
    max_block_tokens: int = 384
    pad_to_multiple_of: int = 16
    query_offset: int = 16384
    scoring_query_tokens: int = 2
    calibrate: bool = False
    calibration_query: str = CALIBRATION_QUERY
    batch_size: int = 1
    chunk_tokens: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_block_tokens", "pad_to_multiple_of", "scoring_query_tokens", "batch_size", "chunk_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"BlockRankOptions.{name} must be >= 1, got {getattr(self, name)}")
        if self.layer is not None and self.layer < 0:
            raise ValueError(f"BlockRankOptions.layer must be >= 0, got {self.layer}")


def default_layer(num_layers: int) -> int:
    """The official scoring layer (20 of 32) scaled to a model with `num_layers` decoder layers."""
    return min(num_layers - 1, round(REFERENCE_LAYER * num_layers / REFERENCE_LAYERS))


def format_document(title: str | None, text: str) -> str:
    """The official document string: `f"{title} {text}".strip()`, a missing title read as empty."""
    return f"{title or ''} {text}".strip()


@dataclass(frozen=True)
class BlockPrompt:
    """One query's prompt as blocks of token ids: block 0 the instruction, blocks 1..N the candidates in
    input order, block N+1 the query block (ending in the scoring tokens). `raw_lengths` are the lengths
    before the cut to `block_size` tokens."""

    blocks: tuple[tuple[int, ...], ...]
    raw_lengths: tuple[int, ...]
    block_size: int
    query_offset: int

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(len(b) for b in self.blocks)

    def input_ids(self) -> list[int]:
        """The packed token sequence [instruction | doc_1 .. doc_N | query]."""
        return [t for block in self.blocks for t in block]

    def position_ids(self) -> list[int]:
        """Instruction 0..L0-1; every candidate block L0..L0+Lb-1; the query block from `query_offset`."""
        first = len(self.blocks[0])
        ids = list(range(first))
        for block in self.blocks[1:-1]:
            ids.extend(range(first, first + len(block)))
        ids.extend(range(self.query_offset, self.query_offset + len(self.blocks[-1])))
        return ids


def _separator_for(texts: Sequence[str]) -> str:
    """A block separator that occurs in none of `texts` (it never reaches the model)."""
    sep = SEPARATOR
    while any(sep in t for t in texts):
        sep = sep.replace(">>", "#>>")
    return sep


def build_prompt(tokenizer: Any, query: str, documents: Sequence[str], options: BlockRankOptions) -> BlockPrompt:
    """Render and tokenise the official BlockRank prompt for `query` and the formatted `documents`.

    The chat template of the tokenizer renders one user turn (instruction + query, the candidates, the final
    section) and the open assistant turn `Final Answer: [`; the rendering is cut at block boundaries, each
    block after the first gets a leading newline, and each is tokenised on its own without special tokens
    (special-token text inside a document becomes the special id, as in the reference).
    """
    sep = _separator_for([query, *documents])
    user = sep.join(
        [
            f"{INSTRUCTION}\nQuery: {query}\n\nDocuments:",
            *(f"ID: {i} | CONTENT: {doc} | END ID: {i}" for i, doc in enumerate(documents)),
            FINAL_SECTION.format(query=query),
        ]
    )
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": ANSWER_PREFIX + sep + ANSWER_OPEN}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    segments = text.split(sep)
    if len(segments) != len(documents) + 3 or segments[-1] != ANSWER_OPEN:
        raise ValueError(
            f"the chat template of {getattr(tokenizer, 'name_or_path', 'the tokenizer')} does not keep the "
            f"BlockRank blocks apart (expected {len(documents) + 3} segments ending in {ANSWER_OPEN!r}, "
            f"got {len(segments)})"
        )
    pieces = [segments[0], *("\n" + s for s in segments[1:-1]), segments[-1]]
    ids = tokenizer(pieces, add_special_tokens=False)["input_ids"]
    raw = [list(b) for b in ids[:-2]] + [list(ids[-2]) + list(ids[-1])]
    longest = max(len(b) for b in raw)
    multiple = options.pad_to_multiple_of
    block_size = math.ceil(min(longest, options.max_block_tokens) / multiple) * multiple
    if len(raw[-1]) > block_size:
        raise ValueError(
            f"query {query[:60]!r}: the query block has {len(raw[-1])} tokens but blocks are cut to {block_size} "
            f"(--max-block-tokens {options.max_block_tokens}); the cut would remove the scoring token "
            f"{ANSWER_OPEN!r}. Raise max_block_tokens or shorten the query"
        )
    if len(raw[-1]) < options.scoring_query_tokens:
        raise ValueError(f"the query block has fewer than scoring_query_tokens={options.scoring_query_tokens} tokens")
    return BlockPrompt(
        blocks=tuple(tuple(b[:block_size]) for b in raw),
        raw_lengths=tuple(len(b) for b in raw),
        block_size=block_size,
        query_offset=options.query_offset,
    )


class BlockRankReranker(PyTerrierReranker):
    """Reranks candidate lists by BlockRank attention scores with a causal LM (Llama/Mistral/Qwen style).

    `rerank_batch` follows the Reranker protocol: hits best first, `score` the BlockRank relevance (a share
    of attention mass in [0, 1], or a difference of two with calibration). `score_batch` returns the raw
    scores in input order.
    """

    Options: ClassVar[type[BlockRankOptions]] = BlockRankOptions

    def __init__(self, lm: CausalLM, options: BlockRankOptions | None = None):
        options = options or BlockRankOptions()
        num_layers = lm.model.config.get_text_config().num_hidden_layers
        layer = default_layer(num_layers) if options.layer is None else options.layer
        if layer >= num_layers:
            raise ValueError(f"layer {layer} does not exist: the model has {num_layers} decoder layers (0..{num_layers - 1})")
        self.lm = lm
        self.options = replace(options, layer=layer)

    def prompt(self, query: str, hits: Sequence[Hit]) -> BlockPrompt:
        return build_prompt(self.lm.tokenizer, query, [format_document(h.title, h.text) for h in hits], self.options)

    def score_batch(self, lists: Sequence[Candidates]) -> list[list[float]]:
        """BlockRank scores of every candidate, in input order, for each query (calibrated if configured)."""
        from tqdm.auto import tqdm

        from rankline.rerankers.blockrank_attention import score_prompts

        opts = self.options
        results: list[list[float]] = [[] for _ in lists]
        todo = [i for i, c in enumerate(lists) if c.hits]
        chunks = [todo[start:start + opts.batch_size] for start in range(0, len(todo), opts.batch_size)]
        for chunk in tqdm(chunks, desc="blockrank", unit="batch", disable=len(chunks) < 2, leave=False):
            prompts = [self.prompt(lists[i].query.text, lists[i].hits) for i in chunk]
            if opts.calibrate:
                prompts += [self.prompt(opts.calibration_query, lists[i].hits) for i in chunk]
            scores = score_prompts(self.lm.model, prompts, layer=opts.layer, scoring_tokens=opts.scoring_query_tokens,
                                   chunk_tokens=opts.chunk_tokens)
            for j, i in enumerate(chunk):
                row = scores[j]
                if opts.calibrate:
                    row = [s - c for s, c in zip(row, scores[j + len(chunk)])]
                results[i] = row
        return results

    def rerank_batch(self, lists: Sequence[Candidates]) -> list[list[Hit]]:
        return [order_hits(c.hits, s) for c, s in zip(lists, self.score_batch(lists))]
