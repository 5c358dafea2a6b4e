"""Rerankers by name, for `rankline rerank --reranker NAME` and the pipeline builder.

Each entry is "module:callable"; the callable is called as `callable(lm, **options)` with a loaded
`CausalLM` and returns a `Reranker`. Entries are imported only when used, so listing them is instant.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any

from rankline.rerankers.base import Reranker
from rankline.rerankers.models import CausalLM

RERANKERS: dict[str, str] = {
    "first": "rankline.rerankers.first:FirstReranker",
    "listwise": "rankline.rerankers.listwise:ListwiseGenerationReranker",
    "query-likelihood": "rankline.rerankers.query_likelihood:QueryLikelihoodReranker",
    "blockrank": "rankline.rerankers.blockrank:blockrank_reranker",
}


def reranker_factory(name: str) -> Any:
    """The callable registered under `name`."""
    if name not in RERANKERS:
        raise ValueError(f"unknown reranker {name!r}; expected one of {', '.join(RERANKERS)}")
    module, _, attr = RERANKERS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def reranker_options(name: str) -> set[str]:
    """The keyword options the reranker `name` accepts."""
    params = inspect.signature(reranker_factory(name)).parameters.values()
    return {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_reranker(name: str, lm: CausalLM, **options: Any) -> Reranker:
    """Build the reranker `name` over `lm`; options it does not take are an error naming them."""
    unknown = sorted(set(options) - reranker_options(name))
    if unknown:
        raise ValueError(f"reranker {name!r} does not take option(s) {', '.join(unknown)}")
    return reranker_factory(name)(lm, **options)
