"""rankline.rerankers: LLM model loading, prompts, FIRST, BlockRank and baseline rerankers."""
from rankline.rerankers.base import Reranker
from rankline.rerankers.first import FirstReranker
from rankline.rerankers.listwise import ListwiseGenerationReranker
from rankline.rerankers.models import CausalLM, load_causal_lm
from rankline.rerankers.query_likelihood import QueryLikelihoodReranker
from rankline.rerankers.ranking import SlidingWindow
from rankline.rerankers.registry import RERANKERS, build_reranker

__all__ = [
    "RERANKERS",
    "CausalLM",
    "FirstReranker",
    "ListwiseGenerationReranker",
    "QueryLikelihoodReranker",
    "Reranker",
    "SlidingWindow",
    "build_reranker",
    "load_causal_lm",
]
