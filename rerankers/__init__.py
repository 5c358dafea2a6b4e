"""rankline.rerankers: LLM model loading, prompts, FIRST, BlockRank and baseline rerankers, the one way
to build them (`build_reranker`), the one head cut (`rerank_head`) and the one score rule (`order_hits`)."""
from rankline.rerankers.base import Reranker
from rankline.rerankers.blockrank import BlockRankReranker
from rankline.rerankers.first import FirstReranker
from rankline.rerankers.listwise import ListwiseGenerationReranker
from rankline.rerankers.models import CausalLM, load_causal_lm
from rankline.rerankers.query_likelihood import QueryLikelihoodReranker
from rankline.rerankers.ranking import DEFAULT_DEPTH, SlidingWindow, order_hits, rerank_head
from rankline.rerankers.registry import RERANKERS, build_reranker, reranker_options

__all__ = [
    "DEFAULT_DEPTH",
    "RERANKERS",
    "BlockRankReranker",
    "CausalLM",
    "FirstReranker",
    "ListwiseGenerationReranker",
    "QueryLikelihoodReranker",
    "Reranker",
    "SlidingWindow",
    "build_reranker",
    "load_causal_lm",
    "order_hits",
    "rerank_head",
    "reranker_options",
]
