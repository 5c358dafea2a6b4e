"""rankline.kernels: attention operators, a folder per op (lightning_attention/: decayed linear attention;
block_attention/: BlockRank block-sparse attention), each with a naive reference (naive.py), a PyTorch path,
a Triton path (triton.py) and one dispatcher (the op's __init__.py); backend.py holds the backend choice they
share. Imports nothing else of rankline; torch and triton are imported only when an operator runs.

An op's folder has its function's name, and the function is what ``rankline.kernels.<op>`` holds: reach a
path's module with ``from rankline.kernels.block_attention import blockwise`` (``import
rankline.kernels.block_attention.blockwise as m`` finds the function and fails)."""
from .block_attention import BlockLayout, block_attention, block_attention_scores, document_attention_scores
from .lightning_attention import fla_log_decay, lightning_attention, lightning_attention_step, transnormer_log_decay

__all__ = [
    "BlockLayout",
    "block_attention",
    "block_attention_scores",
    "document_attention_scores",
    "fla_log_decay",
    "lightning_attention",
    "lightning_attention_step",
    "transnormer_log_decay",
]
