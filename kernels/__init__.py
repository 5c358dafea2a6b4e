"""rankline.kernels: attention operators (lightning linear attention, BlockRank block-sparse
attention), each with a naive reference, a PyTorch path and a Triton path behind one dispatcher.
Imports nothing else of rankline."""
