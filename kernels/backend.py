"""Backend choice and accumulation dtype, shared by the operators."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

BACKENDS = ("auto", "naive", "torch", "triton")


def resolve_backend(backend: str, tensor: "torch.Tensor") -> str:
    """``auto`` is Triton for CUDA tensors when Triton is installed, the PyTorch path otherwise."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if tensor.is_cuda:
        import importlib.util

        if importlib.util.find_spec("triton") is not None:
            return "triton"
    return "torch"


def accumulation_dtype(dtype: "torch.dtype") -> "torch.dtype":
    """fp64 stays fp64 (for oracle checks); everything else accumulates in fp32."""
    import torch

    return torch.float64 if dtype == torch.float64 else torch.float32
