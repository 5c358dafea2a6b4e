"""ONNX Runtime for the transformer of a sentence-transformers encoder on the CPU: the same embeddings
(within 1e-6) in about half of PyTorch's time (MiniLM on SciFact, benchmarks/retrieval_speed.py).

The encoder's Hugging Face transformer (its first module) is exported once to ONNX and cached as
``$RANKLINE_CACHE/onnx/<weights sha256>-<recipe version>/model.onnx``; at load it is swapped for a module that runs the
export in ONNX Runtime, so tokenisation, prompts, pooling, normalisation and any dense layers still
run in sentence-transformers exactly as before. The export traces the eager attention path: the SDPA
path bakes the example batch's padding into the graph, which gives wrong embeddings for other batches.
"""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

from rankline.formats import cache_root, cached_folder

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_CACHE_VERSION = "v1"  # bump when the export recipe changes


def onnx_available() -> bool:
    """Whether ONNX export (onnx) and inference (onnxruntime) are installed."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def _input_names(hf_model: Any) -> list[str]:
    params = inspect.signature(hf_model.forward).parameters
    return [name for name in _INPUTS if name in params]


def _export(hf_model: Any, names: list[str], folder: Path) -> None:
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = hf_model

        def forward(self, *inputs: Any) -> Any:
            return self.inner(**dict(zip(names, inputs))).last_hidden_state

    # Two rows, the second padded, so the traced graph masks padding the general way.
    ids = torch.full((2, 16), 101, dtype=torch.long)
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    example["attention_mask"][1, 9:] = 0
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]}
    previous = hf_model.config._attn_implementation
    hf_model.set_attn_implementation("eager")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on Python control flow, expected here
            torch.onnx.export(LastHiddenState(), tuple(example[n] for n in names), str(folder / "model.onnx"),
                              input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes,
                              opset_version=17, dynamo=False)
    finally:
        hf_model.set_attn_implementation(previous)


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_module(hf_model: Any, names: list[str], session: Any) -> Any:
    """A torch module standing in for `hf_model` in sentence-transformers: the forward runs `session`,
    whose inputs are `names`."""
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    class OnnxTransformer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = hf_model.config

        def forward(self, **features: Any) -> BaseModelOutput:
            feed = {n: features[n].cpu().numpy() for n in names if features.get(n) is not None}
            if "token_type_ids" in names and "token_type_ids" not in feed:
                feed["token_type_ids"] = torch.zeros_like(features["input_ids"]).numpy()
            (hidden,) = session.run(None, feed)
            return BaseModelOutput(last_hidden_state=torch.from_numpy(hidden))

    return OnnxTransformer()


def use_onnx_runtime(model: Any, weights_sha256: str) -> None:
    """Run `model`'s (a CPU SentenceTransformer) transformer in ONNX Runtime from now on, exporting it
    on first use. Raises when the model is not a text transformer that can be exported."""
    import torch
    from sentence_transformers.base.modules.transformer import Transformer

    first = model[0]
    if not isinstance(first, Transformer) or set(first.modality_config) != {"text"}:
        raise ValueError(f"the first module is {type(first).__name__}, not a text-only transformer")
    names = _input_names(first.model)
    if not {"input_ids", "attention_mask"} <= set(names):
        raise ValueError(f"{type(first.model).__name__}.forward takes no input_ids / attention_mask")
    folder = cached_folder(cache_root() / "onnx" / f"{weights_sha256}-{_CACHE_VERSION}", "model.onnx",
                           lambda tmp: _export(first.model, names, tmp))
    first.model = _onnx_module(first.model, names, _session(folder / "model.onnx", torch.get_num_threads()))
