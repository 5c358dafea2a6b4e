"""rankline.kernels: attention operators (lightning linear attention, BlockRank block-sparse
attention), each with a naive reference, a PyTorch path and a Triton path behind one dispatcher.
Imports nothing else of rankline; torch and triton are imported only when an operator runs."""
from .block_sparse import block_attention, block_attention_scores, document_attention_scores
from .block_layout import BlockLayout
from .decay import fla_log_decay, transnormer_log_decay
from .lightning import lightning_attention, lightning_attention_step

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
