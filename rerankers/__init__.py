"""rankline.rerankers: LLM model loading, prompts, FIRST, BlockRank and baseline rerankers."""
from rankline.rerankers.base import Reranker

__all__ = ["Reranker"]
