"""rankline.rerankers.training: the training objectives and training data of the LLM rerankers.

A trainer builds a step from three pieces:

1. data (:mod:`.data`): :class:`RankingExample` lists from qrels + a first-stage run
   (:func:`read_training_examples`, :class:`ListOptions`), from rank_llm ShareGPT JSON (:func:`read_sharegpt`) or
   BlockRank JSONL (:func:`read_blockrank_jsonl`); :func:`split_by_query` for the held-out queries;
2. encoding and batching: FIRST :func:`encode_first` + :func:`collate_first` (with :func:`identifier_ids`),
   BlockRank :func:`encode_blockrank` + :func:`collate_blockrank`;
3. the loss: :func:`first_loss` (:class:`FirstObjective`, :func:`first_objective`) or :func:`blockrank_loss`
   (:class:`BlockRankObjective`), each returning the total to backpropagate and every component separately.

For example, one FIRST step::

    ids = identifier_ids(tok)
    batch = collate_first([encode_first(tok, e, identifiers=ids) for e in examples],
                          pad_token_id=tok.pad_token_id, identifiers=ids).to(device)
    out = first_loss(model, batch, first_objective("combined"))  # L_LM + 10 x weighted RankNet
    out.loss.backward(); log(out.metrics())

The tensor-level losses (:mod:`.ranking_losses`, :func:`info_nce_loss`, :func:`lm_loss`) take plain tensors.
`python benchmarks/loss_parity.py` prints our values against the reference implementations'.
Importing this package loads neither torch nor transformers; they are imported when a loss runs.
"""
from rankline.rerankers.training.blockrank_loss import (
    BlockRankBatch,
    BlockRankEncoded,
    BlockRankLossOutput,
    BlockRankObjective,
    blockrank_loss,
    collate_blockrank,
    encode_blockrank,
    info_nce_loss,
)
from rankline.rerankers.training.data import (
    ListOptions,
    ListwiseConversation,
    RankingExample,
    TrainingSet,
    examples_from_run,
    read_blockrank_jsonl,
    read_sharegpt,
    read_training_examples,
    resample,
    split_by_query,
    write_blockrank_jsonl,
    write_sharegpt,
)
from rankline.rerankers.training.first_loss import (
    FirstBatch,
    FirstEncoded,
    FirstLossOutput,
    FirstObjective,
    collate_first,
    encode_first,
    first_loss,
    first_loss_from_logits,
    first_objective,
    identifier_ids,
    lm_loss,
)
from rankline.rerankers.training.ranking_losses import (
    lambdarank_loss,
    listnet_loss,
    pair_counts,
    ranking_loss,
    ranknet_loss,
    teacher_ranks,
)

__all__ = [
    "BlockRankBatch",
    "BlockRankEncoded",
    "BlockRankLossOutput",
    "BlockRankObjective",
    "FirstBatch",
    "FirstEncoded",
    "FirstLossOutput",
    "FirstObjective",
    "ListOptions",
    "ListwiseConversation",
    "RankingExample",
    "TrainingSet",
    "blockrank_loss",
    "collate_blockrank",
    "collate_first",
    "encode_blockrank",
    "encode_first",
    "examples_from_run",
    "first_loss",
    "first_loss_from_logits",
    "first_objective",
    "identifier_ids",
    "info_nce_loss",
    "lambdarank_loss",
    "listnet_loss",
    "lm_loss",
    "pair_counts",
    "ranking_loss",
    "ranknet_loss",
    "read_blockrank_jsonl",
    "read_sharegpt",
    "read_training_examples",
    "resample",
    "split_by_query",
    "teacher_ranks",
    "write_blockrank_jsonl",
    "write_sharegpt",
]
