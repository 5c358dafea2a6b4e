"""Rerankers by name: the one way to build one, from Python, a pipeline file, the CLI or inside a Ray
actor (`build_reranker` is a plain module-level function, so `Factory(build_reranker, (name,), {...})`
pickles by reference).

Each entry is "module:Class". A reranker class is built as `Class(lm, Class.Options(**options))`: its
options, with their defaults, are the fields of its `Options` dataclass. Entries are imported only when
used, and no model loads before the name, the options, the model's whereabouts and the device are
checked (`check_reranker`, which the command line also runs before reading any input).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

from rankline.rerankers.base import Reranker
from rankline.rerankers.models import (
    DEFAULT_MODEL,
    CausalLM,
    check_adapter,
    check_device,
    check_model_source,
    load_causal_lm,
)

DTYPES = ("float32", "bfloat16", "float16")

RERANKERS: dict[str, str] = {
    "first": "rankline.rerankers.first:FirstReranker",
    "listwise": "rankline.rerankers.listwise:ListwiseGenerationReranker",
    "query-likelihood": "rankline.rerankers.query_likelihood:QueryLikelihoodReranker",
    "blockrank": "rankline.rerankers.blockrank:BlockRankReranker",
}


def _reranker_class(name: str) -> Any:
    if name not in RERANKERS:
        raise ValueError(f"unknown reranker {name!r}; expected one of {', '.join(RERANKERS)}")
    module, _, attr = RERANKERS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def reranker_options(name: str) -> dict[str, object]:
    """The options the reranker `name` takes, each with its default."""
    return {f.name: f.default for f in dataclasses.fields(_reranker_class(name).Options)}


def check_reranker(
    name: str, model: CausalLM | str = DEFAULT_MODEL, *, device: str | None = None, dtype: str | None = None,
    adapter: str | None = None, **options: Any,
) -> Any:
    """Everything about a reranker that can be checked without loading its model, in this order: the
    name, that it takes each option, each option's value (its Options dataclass: e.g. window <= 26
    identifiers, stride <= window, context_size >= 1), then, for a model given by name, that the model
    can be found (`check_model_source`), the device (`check_device`) and the dtype, and a `layer` option
    against the model's number of layers (read from its config.json when it is a local folder). Returns
    the checked Options; raises ValueError (or FileNotFoundError for a missing model folder)."""
    cls = _reranker_class(name)
    unknown = sorted(set(options) - set(reranker_options(name)))
    if unknown:
        raise ValueError(f"reranker {name!r} does not take option(s) {', '.join(unknown)}; "
                         f"it takes {', '.join(reranker_options(name))}")
    checked = cls.Options(**options)
    if isinstance(model, str):
        check_model_source(model)
        check_device(device)
        if dtype is not None and dtype not in DTYPES and not _is_torch_dtype(dtype):
            raise ValueError(f"unknown dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        _check_layer(model, getattr(checked, "layer", None))
        check_adapter(adapter)
    elif device is not None or dtype is not None or adapter is not None:
        raise ValueError("device, dtype and adapter apply to a model given by name; this one is already loaded")
    return checked


def build_reranker(
    name: str, model: CausalLM | str = DEFAULT_MODEL, *, device: str | None = None, dtype: str | None = None,
    adapter: str | None = None, **options: Any,
) -> Reranker:
    """The reranker `name` over `model`: a loaded CausalLM, or a name or folder that `load_causal_lm` loads
    with `device`, `dtype` and a LoRA `adapter` folder (`rankline train`'s DIR/best). An unknown name, an option the reranker does not take, an option value it
    rejects, a model that cannot be found or an unusable device is a ValueError (`check_reranker`),
    raised before any model loads."""
    cls = _reranker_class(name)
    checked = check_reranker(name, model, device=device, dtype=dtype, adapter=adapter, **options)
    if isinstance(model, str):
        model = load_causal_lm(model, device=device, dtype=dtype, adapter=adapter)
    return cls(model, checked)


def _is_torch_dtype(dtype: Any) -> bool:
    return type(dtype).__name__ == "dtype" and type(dtype).__module__ == "torch"


def _check_layer(model: str, layer: int | None) -> None:
    """A decoder layer index (BlockRank's `layer`) against the number of layers in a local model
    folder's config.json; other models are checked when they load."""
    if layer is None:
        return
    config_path = Path(model).expanduser() / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    config = config.get("text_config", config) if isinstance(config, dict) else {}
    layers = config.get("num_hidden_layers") if isinstance(config, dict) else None
    if isinstance(layers, int) and not isinstance(layers, bool) and layer >= layers:
        raise ValueError(f"layer {layer} does not exist: the model {model} has {layers} decoder layers "
                         f"(0..{layers - 1})")
