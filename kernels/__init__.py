"""rankline.kernels: attention operators (lightning linear attention, BlockRank block-sparse
attention), each with a naive reference, a PyTorch path and a Triton path behind one dispatcher.
Imports nothing else of rankline; torch and triton are imported only when an operator runs."""
from .block_attention import block_attention, block_attention_scores
from .block_layout import BlockLayout

__all__ = ["BlockLayout", "block_attention", "block_attention_scores"]
