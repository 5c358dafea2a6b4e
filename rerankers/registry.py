"""Rerankers by name: the one way to build one, from Python, a pipeline file, the CLI or inside a Ray
actor (`build_reranker` is a plain module-level function, so `Factory(build_reranker, (name,), {...})`
pickles by reference).

Each entry is "module:Class". A reranker class is built as `Class(lm, Class.Options(**options))`: its
options, with their defaults, are the fields of its `Options` dataclass. Entries are imported only when
used, and no model loads before the name and the options are checked.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from rankline.rerankers.base import Reranker
from rankline.rerankers.models import DEFAULT_MODEL, CausalLM, load_causal_lm

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


def build_reranker(
    name: str, model: CausalLM | str = DEFAULT_MODEL, *, device: str | None = None, dtype: str | None = None,
    **options: Any,
) -> Reranker:
    """The reranker `name` over `model`: a loaded CausalLM, or a name or folder that `load_causal_lm` loads
    with `device` and `dtype`. An unknown name, an option the reranker does not take or an option value it
    rejects is a ValueError, raised before any model loads."""
    cls = _reranker_class(name)
    unknown = sorted(set(options) - set(reranker_options(name)))
    if unknown:
        raise ValueError(f"reranker {name!r} does not take option(s) {', '.join(unknown)}; "
                         f"it takes {', '.join(reranker_options(name))}")
    checked = cls.Options(**options)
    if isinstance(model, str):
        model = load_causal_lm(model, device=device, dtype=dtype)
    elif device is not None or dtype is not None:
        raise ValueError("device and dtype apply to a model given by name; this one is already loaded")
    return cls(model, checked)
