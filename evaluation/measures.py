"""The measure families: one small registered object each, holding its parameters and a one-line
description, that computes its per-query values from a :class:`~rankline.evaluation.ranking.Ranking`.

Names follow ir_measures: ``nDCG@10``, ``nDCG(dcg='exp-log2')@10``, ``DCG@10``, ``RR``,
``RR(rel=2)@10``, ``R@100``, ``P@10``, ``AP``, ``AP@100``, ``Judged@10``; ``@k`` is the rank cutoff.
Semantics are trec_eval's (see rankline.evaluation.metrics). A family is a frozen dataclass: its
fields after ``cutoff`` are its parameters (the field's default gives the type; ``metadata`` holds
``help`` and, for a closed set, ``choices``), and :meth:`Measure.values` maps the run's ranking and
the ideal ranking of the same queries to one value per query. Adding a family is one class here,
decorated with :func:`register`; parsing, printing and ``rankline eval --list-measures`` follow.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from rankline.evaluation.ranking import UNJUDGED, Ranking, discount

#: family name -> family (the registered Measure subclasses, in the order they were registered)
FAMILIES: dict[str, type["Measure"]] = {}
_ALIASES: dict[str, str] = {}
_NAME_RE = re.compile(r"^\s*([A-Za-z]+)\s*(?:\((.*)\))?\s*(?:@\s*(\d+))?\s*$")


def register(family: type["Measure"]) -> type["Measure"]:
    """Class decorator: make `family` known by its name and aliases."""
    FAMILIES[family.name] = family
    _ALIASES.update({alias: family.name for alias in family.aliases})
    return family


def _param(help: str, **more: Any) -> dict[str, Any]:
    return {"help": help, **more}


@dataclass(frozen=True)
class Measure:
    """One measure: a family (the subclass) with its cutoff k (None = whole ranking) and parameters."""

    name: ClassVar[str]
    description: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    cutoff_required: ClassVar[bool] = False

    cutoff: int | None = field(default=None, metadata=_param("rank cutoff k"))

    def __post_init__(self) -> None:
        if self.cutoff is not None and (isinstance(self.cutoff, bool) or not isinstance(self.cutoff, int) or self.cutoff < 1):
            raise ValueError(f"{self.name}: the cutoff must be a positive integer, got {self.cutoff}")
        if self.cutoff_required and self.cutoff is None:
            raise ValueError(f"{self.name} needs a cutoff, e.g. {self.name}@10")
        for param in self.parameters():
            value, choices = getattr(self, param.name), param.metadata.get("choices")
            if type(value) is not type(param.default):
                raise ValueError(f"{self.name}: {param.name} must be {type(param.default).__name__}, got {value!r}")
            if choices and value not in choices:
                raise ValueError(f"{self.name}: {param.name} must be one of {choices}, got {value!r}")

    @classmethod
    def parameters(cls) -> list[dataclasses.Field]:
        """The family's parameters besides the cutoff, in the order of its name."""
        return [f for f in dataclasses.fields(cls) if f.name != "cutoff"]

    def __str__(self) -> str:
        params = [f"{p.name}={getattr(self, p.name)!r}" for p in self.parameters() if getattr(self, p.name) != p.default]
        text = self.name + (f"({','.join(params)})" if params else "")
        return text + (f"@{self.cutoff}" if self.cutoff is not None else "")

    def values(self, run: Ranking, ideal: Ranking) -> np.ndarray:
        """One value per query from the run's ranking and the ideal ranking of the same queries."""
        raise NotImplementedError


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = numerator.astype(np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


# ------------------------------------------------------------------------------- graded: DCG, nDCG


@dataclass(frozen=True)
class _Graded(Measure):
    """A gain-based measure: the grades are the gains (negative and unjudged ones count 0)."""

    dcg: str = field(default="log2", metadata=_param(
        "gain of grade g: 'log2' = g, 'exp-log2' = 2^g - 1 (Burges)", choices=("log2", "exp-log2")))

    def _dcg(self, top: Ranking) -> np.ndarray:
        gains = np.maximum(top.grades, 0.0)
        if self.dcg == "exp-log2":
            gains = np.exp2(gains) - 1.0
        return top.per_query_sum(gains * discount(top.rank))


@register
@dataclass(frozen=True)
class NDCG(_Graded):
    name = "nDCG"
    aliases = ("NDCG",)
    description = "DCG over the DCG of the ideal ranking of every judged document of the query (trec_eval ndcg_cut)"

    def values(self, run: Ranking, ideal: Ranking) -> np.ndarray:
        return _safe_divide(self._dcg(run.head(self.cutoff)), self._dcg(ideal.head(self.cutoff)))


@register
@dataclass(frozen=True)
class DCG(_Graded):
    name = "DCG"
    description = "discounted cumulative gain: sum of gain / log2(rank + 1) over the top k (unnormalised)"

    def values(self, run: Ranking, ideal: Ranking) -> np.ndarray:
        return self._dcg(run.head(self.cutoff))


# ------------------------------------------------------------------------------ binary: RR, R, P, AP


@dataclass(frozen=True)
class _Binary(Measure):
    """A measure of relevant documents: those graded `rel` or higher."""

    rel: int = field(default=1, metadata=_param("lowest grade that counts as relevant (TREC DL: rel=2)"))

    def _hits(self, top: Ranking) -> np.ndarray:
        return top.grades >= self.rel

    def _relevant(self, ideal: Ranking) -> np.ndarray:
        """Relevant documents per query in the qrels, retrieved or not."""
        return ideal.per_query_sum(ideal.grades >= self.rel)


@register
@dataclass(frozen=True)
class RR(_Binary):
    name = "RR"
    aliases = ("MRR",)
    description = "reciprocal rank of the first relevant document (0 if none in the top k)"

    def values(self, run: Ranking, ideal: Ranking) -> np.ndarray:
        top = run.head(self.cutoff)
        first = np.full(len(top.sizes), np.inf)
        where = np.flatnonzero(self._hits(top))
        q = top.query[where]
        leading = np.r_[True, q[1:] != q[:-1]] if len(q) else np.zeros(0, bool)
        first[q[leading]] = top.rank[where[leading]]
        return 1.0 / (first + 1.0)


@register
@dataclass(frozen=True)
class Recall(_Binary):
    name = "R"
    aliases = ("Recall",)
    cutoff_required = True
    description = "relevant documents in the top k over the relevant documents in the qrels (0 when none)"

    def values(self, run: Ranking, ideal: Ranking) -> np.ndarray:
        top = run.head(self.cutoff)
        return _safe_divide(top.per_query_sum(self._hits(top)), self._relevant(ideal))


@register
@dataclass(frozen=True)
class Precision(_Binary):
    name = "P"
    aliases = ("Precision",)
    cutoff_required = True
    description = "relevant documents in the top k over k"

    def values(self, run: Ranking, ideal: Ranking) -> np.ndarray:
        top = run.head(self.cutoff)
        return top.per_query_sum(self._hits(top)) / self.cutoff


@register
@dataclass(frozen=True)
class AP(_Binary):
    name = "AP"
    aliases = ("MAP",)
    description = ("mean over the qrels' relevant documents of the precision at their rank (0 for those not in the "
                   "top k; AP@k is trec_eval's map_cut_k)")

    def values(self, run: Ranking, ideal: Ranking) -> np.ndarray:
        top = run.head(self.cutoff)
        hit = self._hits(top)
        hits = top.per_query_sum(hit)
        hits_so_far = np.cumsum(hit) - (np.cumsum(hits) - hits)[top.query]
        return _safe_divide(top.per_query_sum(hit * hits_so_far / (top.rank + 1.0)), self._relevant(ideal))


# -------------------------------------------------------------------------------------------- Judged


@register
@dataclass(frozen=True)
class Judged(Measure):
    name = "Judged"
    description = "share of the top min(k, retrieved) documents that have a judgment (ir_measures)"

    def values(self, run: Ranking, ideal: Ranking) -> np.ndarray:
        top = run.head(self.cutoff)
        return _safe_divide(top.per_query_sum(top.grades != UNJUDGED), top.sizes)


# ------------------------------------------------------------------------------------------- parsing


def parse_measure(name: str | Measure) -> Measure:
    """Parse an ir_measures-style name such as ``RR(rel=2)@10`` or ``nDCG(dcg='exp-log2')@10``."""
    if isinstance(name, Measure):
        return name
    match = _NAME_RE.match(name)
    if not match:
        raise ValueError(f"cannot parse measure {name!r}; expected e.g. nDCG@10, RR(rel=2)@10, AP")
    kind, params_text, cutoff = match.groups()
    family = FAMILIES.get(_ALIASES.get(kind, kind))
    if family is None:
        raise ValueError(f"unknown measure {name!r}; known: {', '.join(FAMILIES)} (e.g. nDCG@10, RR(rel=2)@10)")
    params = {p.name: p for p in family.parameters()}
    expected = ", ".join(usage(p) for p in params.values()) or "none"
    kwargs: dict[str, object] = {}
    for item in filter(None, (p.strip() for p in (params_text or "").split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or key not in params or key in kwargs:
            why = f"{family.name} takes no {key!r} parameter; " if sep and key not in params else ""
            raise ValueError(f"measure {name!r}: bad parameter {item!r}; {why}its parameters: {expected}")
        value = value.strip("'\"")
        if isinstance(params[key].default, int):
            try:
                kwargs[key] = int(value)
            except ValueError:
                raise ValueError(f"measure {name!r}: {key} must be an integer, got {value!r}") from None
        else:
            kwargs[key] = value
    try:
        return family(int(cutoff) if cutoff else None, **kwargs)
    except ValueError as exc:
        raise ValueError(f"measure {name!r}: {exc}") from None


def usage(param: dataclasses.Field) -> str:
    """How a parameter is written: ``rel=N`` or ``dcg='log2'|'exp-log2'``."""
    choices = param.metadata.get("choices")
    return f"{param.name}=" + ("|".join(map(repr, choices)) if choices else "N")
