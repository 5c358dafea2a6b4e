"""The BlockRank training objective (Gupta et al. 2025; official code nilesh2797/BlockRank ``losses.py``
``compute_auxiliary_attention_loss``, its ``block_icr_collate_fn`` and ``BlockRankAuxLossTrainer``).

**An example** is the inference prompt of :func:`rankline.rerankers.blockrank.build_prompt` (the same blocks,
cut to the same block size, the same shared document position ids and query-block offset) whose query
block, ending in ``Final Answer: [``, is followed by the answer ``i, j]`` and the chat template's end of turn —
the tokens of the official completion ``[i, j]<end of turn>`` (the positives' indices in prompt order,
ascending). The ``[`` and the answer tokens are the language-modelling targets, as in the official collate
function. Unlike the official collate, the answer never changes the block size, so training sees exactly the
documents inference sees.

**The forward pass** runs the model with the structured attention of inference
(``rankline.rerankers.blockrank_attention``'s attention function, ``rankline.kernels.block_attention`` on its
PyTorch path, which autograd differentiates): the instruction causal on itself, each document on the
instruction and causally on itself, the query block (with the answer) on everything before it and causally
on itself. Rows are packed and right-padded; padding takes part in nothing.

**The losses** (:class:`BlockRankObjective`):

- ``L_aux`` at the scoring layer: for each head and each of the last ``scoring_query_tokens`` prompt tokens of
  the query block (the ``[`` and the token before it), the pre-softmax scaled logits ``q . k / sqrt(d)`` onto
  the document tokens only, softmaxed over those tokens; mean over heads and the query tokens; summed within
  each document (``rankline.kernels.block_attention_scores``, the formula inference scores with). The document
  scores over τ (0.05) enter an InfoNCE with multiple positives:
  ``-(logsumexp over positives - logsumexp over all documents)``, mean over the batch (:func:`info_nce_loss`).
- ``L_LM``: mean next-token cross-entropy over the ``[`` and answer tokens of the batch.
- ``L = lm_weight * L_LM + aux_weight * L_aux`` (official: 1 and 0.1). With ``lm_weight = 0`` the layers after
  the scoring layer are never run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from rankline.rerankers.blockrank import (
    ANSWER_OPEN,
    ANSWER_PREFIX,
    SEPARATOR,
    BlockPrompt,
    BlockRankOptions,
    build_prompt,
    default_layer,
    format_document,
)
from rankline.rerankers.training.data import RankingExample
from rankline.rerankers.training.ranking_losses import widened

if TYPE_CHECKING:
    import torch

    from rankline.kernels import BlockLayout

IGNORE_INDEX = -100
DEFAULT_TEMPERATURE = 0.05
DEFAULT_AUX_WEIGHT = 0.1


def answer_text(positives: Sequence[int]) -> str:
    """The official answer: ``[i, j]`` with the positives' indices ascending."""
    return ANSWER_OPEN + ", ".join(str(i) for i in sorted(positives)) + "]"


def _answer_tail(tokenizer: Any, positives: Sequence[int]) -> str:
    """The text the chat template renders from the answer's ``[`` to the end of the assistant turn."""
    messages = [{"role": "user", "content": "q"},
                {"role": "assistant", "content": ANSWER_PREFIX + SEPARATOR + answer_text(positives)}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    if rendered.count(SEPARATOR) != 1:
        raise ValueError("the chat template does not render the assistant answer verbatim")
    return rendered.split(SEPARATOR)[1]


@dataclass(frozen=True)
class BlockRankEncoded:
    """One tokenized example: the inference `prompt` (its query block ends in "["), the `answer` tokens that
    follow the "[", and the `positives` (document indices in block order)."""

    prompt: BlockPrompt
    answer: tuple[int, ...]
    positives: tuple[int, ...]

    @property
    def num_documents(self) -> int:
        return len(self.prompt.blocks) - 2

    def input_ids(self) -> list[int]:
        return self.prompt.input_ids() + list(self.answer)

    def position_ids(self) -> list[int]:
        positions = self.prompt.position_ids()
        after = positions[-1] + 1
        return positions + list(range(after, after + len(self.answer)))

    def lengths(self) -> tuple[int, tuple[int, ...], int]:
        """(instruction, documents, query block with the answer) token counts."""
        lengths = self.prompt.lengths
        return lengths[0], tuple(lengths[1:-1]), lengths[-1] + len(self.answer)


def encode_blockrank(tokenizer: Any, example: RankingExample, options: BlockRankOptions = BlockRankOptions()) -> BlockRankEncoded:
    """Tokenize an example for BlockRank training (module docstring); it needs at least one positive."""
    positives = example.positives
    if not positives:
        raise ValueError(f"query {example.qid!r}: BlockRank training needs at least one positive (grade > 0)")
    documents = [format_document(h.title, h.text) for h in example.hits]
    prompt = build_prompt(tokenizer, example.query.text, documents, options)
    tail = _answer_tail(tokenizer, positives)
    opening = tokenizer(ANSWER_OPEN, add_special_tokens=False)["input_ids"]
    tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    if list(tail_ids[: len(opening)]) == list(opening):
        answer = tail_ids[len(opening):]  # the official completion's tokens after its "["
    else:  # the tokenizer merges "[" with the first index: keep inference's "[" token and tokenize the rest alone
        answer = tokenizer(tail[len(ANSWER_OPEN):], add_special_tokens=False)["input_ids"]
    return BlockRankEncoded(prompt, tuple(answer), tuple(positives))


@dataclass
class BlockRankBatch:
    """Packed, right-padded rows [instruction | documents | query block + answer | padding].

    input_ids, position_ids, labels [B, T] (labels -100 except the "[" and the answer); layout: their
    ``rankline.kernels.BlockLayout``; scoring_index [B, n]: absolute positions of the n scoring tokens (the last
    n prompt tokens of each query block, ending at "["); positives, documents [B, N] bool: answer documents
    and real (not padded) document slots.
    """

    input_ids: Any
    position_ids: Any
    labels: Any
    layout: "BlockLayout"
    scoring_index: Any
    positives: Any
    documents: Any

    @property
    def num_tokens(self) -> int:
        """Real (not padding) tokens of the batch."""
        return sum(self.layout.row_lengths)

    def to(self, device: Any) -> "BlockRankBatch":
        return BlockRankBatch(**{k: (v if k == "layout" else v.to(device)) for k, v in vars(self).items()})


def collate_blockrank(encoded: Sequence[BlockRankEncoded], *, scoring_query_tokens: int = 2, pad_token_id: int = 0) -> BlockRankBatch:
    import torch

    from rankline.kernels import BlockLayout

    if not encoded:
        raise ValueError("an empty batch")
    lengths = [e.lengths() for e in encoded]
    layout = BlockLayout.from_lists([a for a, _, _ in lengths], [d for _, d, _ in lengths], [q for _, _, q in lengths])
    B, T, N = len(encoded), layout.seq_len, layout.num_docs
    input_ids = torch.full((B, T), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((B, T), dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    scoring = torch.zeros((B, scoring_query_tokens), dtype=torch.long)
    positives = torch.zeros((B, N), dtype=torch.bool)
    documents = torch.zeros((B, N), dtype=torch.bool)
    for row, (e, q0) in enumerate(zip(encoded, layout.query_starts())):
        ids = e.input_ids()
        input_ids[row, :len(ids)] = torch.tensor(ids)
        position_ids[row, :len(ids)] = torch.tensor(e.position_ids())
        bracket = q0 + e.prompt.lengths[-1] - 1  # the "[" that ends the prompt
        if e.prompt.lengths[-1] < scoring_query_tokens:
            raise ValueError(f"a query block has fewer than scoring_query_tokens={scoring_query_tokens} tokens")
        labels[row, bracket:len(ids)] = torch.tensor(ids[bracket:])
        scoring[row] = torch.arange(bracket - scoring_query_tokens + 1, bracket + 1)
        positives[row, list(e.positives)] = True
        documents[row, :e.num_documents] = True
    return BlockRankBatch(input_ids, position_ids, labels, layout, scoring, positives, documents)


def info_nce_loss(
    scores: "torch.Tensor",
    positives: "torch.Tensor",
    documents: "torch.Tensor | None" = None,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
) -> "torch.Tensor":
    """InfoNCE with multiple positives over document scores [B, N]: per row
    ``-(logsumexp_{i in positives} s_i / τ - logsumexp_{i in documents} s_i / τ)``, mean over rows.
    `documents` (default: all) masks padded slots out; every row needs a positive among its documents."""
    import torch

    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    positives = positives.bool()
    documents = torch.ones_like(positives) if documents is None else documents.bool()
    if not (positives & documents).any(dim=1).all():
        row = int((~(positives & documents).any(dim=1)).nonzero()[0])
        raise ValueError(f"row {row} has no positive document: InfoNCE is undefined")
    logits = scores / temperature
    pos = torch.logsumexp(logits.masked_fill(~(positives & documents), float("-inf")), dim=1)
    every = torch.logsumexp(logits.masked_fill(~documents, float("-inf")), dim=1)
    return -(pos - every).mean()


@dataclass(frozen=True)
class BlockRankObjective:
    """``L = lm_weight * L_LM + aux_weight * L_aux``; `temperature` τ of the InfoNCE; `layer` the scoring layer
    (None: the official 20 of 32 scaled to the model, as inference); `scoring_query_tokens` as inference."""

    lm_weight: float = 1.0
    aux_weight: float = DEFAULT_AUX_WEIGHT
    temperature: float = DEFAULT_TEMPERATURE
    layer: int | None = None
    scoring_query_tokens: int = 2

    def __post_init__(self) -> None:
        if self.lm_weight < 0 or self.aux_weight < 0:
            raise ValueError("loss weights must be >= 0")
        if self.lm_weight == 0 and self.aux_weight == 0:
            raise ValueError("the objective has no term: lm_weight and aux_weight are both 0")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    @classmethod
    def from_options(cls, options: BlockRankOptions, **overrides: Any) -> "BlockRankObjective":
        """The objective that trains the scores a reranker with `options` reads (its layer and scoring tokens)."""
        return cls(**{"layer": options.layer, "scoring_query_tokens": options.scoring_query_tokens, **overrides})


@dataclass
class BlockRankLossOutput:
    """loss: what to backpropagate; lm_loss / aux_loss: the unweighted components (None when off);
    scores [B, N]: the attention mass on each document at the scoring layer (detached; padded slots -inf);
    top1 [B] bool: the best-scored document is a positive."""

    loss: "torch.Tensor"
    lm_loss: "torch.Tensor | None"
    aux_loss: "torch.Tensor | None"
    scores: "torch.Tensor"
    top1: "torch.Tensor"

    def metrics(self) -> dict[str, float]:
        out = {"loss": float(self.loss.detach())}
        if self.lm_loss is not None:
            out["lm_loss"] = float(self.lm_loss.detach())
        if self.aux_loss is not None:
            out["aux_loss"] = float(self.aux_loss.detach())
        out["top1"] = float(self.top1.float().mean())
        return out


class _ScoringLayerDone(Exception):
    """Ends a forward pass at the scoring layer when no later layer is needed."""


class _TrainingPass:
    """What the BlockRank attention function does in a training forward pass (the `_Pass` protocol of
    rankline.rerankers.blockrank_attention): structured attention in every layer; at the scoring layer also the
    document scores, after which the pass stops unless the LM term needs the remaining layers."""

    def __init__(self, layout: "BlockLayout", scoring_index: "torch.Tensor", last: int, stop: bool):
        self.layout, self.scoring_index, self.last, self.stop = layout, scoring_index, last, stop
        self.scores: "torch.Tensor | None" = None

    def attend(self, layer: int, query: "torch.Tensor", key: "torch.Tensor", value: "torch.Tensor", scale: float):
        from rankline.kernels import block_attention, block_attention_scores

        if layer == self.last:
            self.scores = block_attention_scores(query, key, self.layout, query_index=self.scoring_index, scale=scale)
            if self.stop:
                raise _ScoringLayerDone
        return block_attention(query, key, value, self.layout, scale=scale)


def scoring_layer(model: Any, objective: BlockRankObjective) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    num_layers = config.num_hidden_layers
    layer = default_layer(num_layers) if objective.layer is None else objective.layer
    if not 0 <= layer < num_layers:
        raise ValueError(f"layer {layer} does not exist: the model has {num_layers} decoder layers (0..{num_layers - 1})")
    return layer


def blockrank_loss(model: Any, batch: BlockRankBatch, objective: BlockRankObjective = BlockRankObjective()) -> BlockRankLossOutput:
    """Run `model` (a transformers causal LM that dispatches attention through ``AttentionInterface``: Llama,
    Mistral, Qwen, SmolLM, ...; PEFT-wrapped or not) with BlockRank attention on `batch` and compute the
    objective (module docstring)."""
    import torch.nn.functional as F

    from rankline.rerankers.blockrank_attention import blockrank_attention

    layer = scoring_layer(model, objective)
    use_lm, use_aux = objective.lm_weight > 0, objective.aux_weight > 0
    call = _TrainingPass(batch.layout, batch.scoring_index, layer, stop=not use_lm)
    kept = (batch.labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero()[:, 0]
    logits = None
    with blockrank_attention(model):
        try:
            out = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False, blockrank=call,
                        **({"logits_to_keep": kept} if use_lm else {}))
            logits = out.logits
        except _ScoringLayerDone:
            pass
    if call.scores is None:
        raise RuntimeError(f"layer {layer} was never reached")
    scores = call.scores
    lm = aux = None
    if use_lm:
        next_labels = batch.labels[:, kept + 1]
        lm = F.cross_entropy(widened(logits).flatten(0, 1), next_labels.flatten(), ignore_index=IGNORE_INDEX)
    if use_aux:
        aux = info_nce_loss(scores, batch.positives, batch.documents, temperature=objective.temperature)
    total = None
    for weight, term in ((objective.lm_weight, lm), (objective.aux_weight, aux)):
        if term is not None:
            total = weight * term if total is None else total + weight * term
    shown = scores.detach().masked_fill(~batch.documents, float("-inf"))
    top1 = batch.positives.gather(1, shown.argmax(dim=1, keepdim=True))[:, 0]
    return BlockRankLossOutput(total, lm, aux, shown, top1)
