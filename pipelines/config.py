"""Pipeline files: a small YAML or TOML description of the stages, loaded with one call.

    # scifact.yaml (paths are relative to this file)
    retriever:
      index: indexes/scifact        # a `rankline index` folder
      method: dense                 # dense | bm25 | hybrid
      k: 100                        # candidates retrieved per query
      options: {nprobe: 16}         # more open_retriever options (optional)
      shards: 4                     # optional: a flat dense index served as 4 shards, one Ray actor each
      shard_resources: {CPU: 1}     #   per shard actor: CPU and custom Ray resources (placement)
    reranker:                       # optional
      name: first                   # first | listwise | query-likelihood | blockrank
      model: smollm2-135m-instruct  # or a HF id, or a model folder
      depth: 20                     # candidates of a query the reranker receives (default 100)
      options: {window: 20, stride: 10, device: cpu}  # the reranker's options, device, dtype
    serve:                          # optional; used by `rankline serve`
      reranker_replicas: 1
      reranker_resources: {CPU: 1}  # per replica: CPU, GPU, custom Ray resources
      max_k: 100
      api_keys_file: keys.txt       # optional: one key per line; clients send Authorization: Bearer KEY

A stage may instead name any callable that returns a Retriever / Reranker:
`factory: "package.module:callable"` with optional `args: [...]` and `kwargs: {...}`.

    load_pipeline("scifact.yaml").search("...", k=10)
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from rankline.formats import open_text
from rankline.pipelines.executor import Factory
from rankline.pipelines.pipeline import Pipeline
from rankline.rerankers import DEFAULT_DEPTH


@dataclass(frozen=True)
class ServeSettings:
    """Limits and scaling of the search endpoint."""

    retriever_replicas: int = 1
    retriever_resources: Mapping[str, float] = field(default_factory=lambda: {"CPU": 1})
    reranker_replicas: int = 1
    reranker_resources: Mapping[str, float] = field(default_factory=lambda: {"CPU": 1})
    max_query_chars: int = 2000
    max_k: int = 100
    max_batch_size: int = 8  # concurrent requests batched into one retriever / reranker call
    max_ongoing_requests: int = 100  # requests the ingress replica handles at once (the rest queue)
    batch_wait_timeout_s: float = 0.01  # how long a batch waits to fill, when other requests are in flight
    request_timeout_s: float = 120.0
    # A stage call pending this long makes the ingress ping the stage; a stage whose ping is not
    # answered within this long again is down: its calls get 503 at once until it answers again.
    ping_timeout_s: float = 2.0
    max_body_bytes: int = 1_000_000  # request bodies above this (1 MB) get 413
    # One API key per line (blank lines and lines starting with # skipped), an absolute path once
    # loaded (relative to the pipeline file in it); None: no keys asked.
    api_keys_file: str | None = None


@dataclass(frozen=True)
class PipelineConfig:
    retriever: Factory
    k: int
    reranker: Factory | None = None
    depth: int = DEFAULT_DEPTH
    serve: ServeSettings = field(default_factory=ServeSettings)
    source: str = ""  # the file it was read from

    def pipeline(self) -> Pipeline:
        pipe = Pipeline.builder().retrieve(self.retriever, k=self.k)
        if self.reranker is not None:
            pipe = pipe.rerank(self.reranker, depth=self.depth)
        return pipe.build()

    def served(self) -> "PipelineConfig":
        """The pipeline as the search service runs it: a sharded retriever (`retriever.shards`) does not
        hold a request while Ray restarts a shard that died, it fails it at once, so the client gets 503
        with Retry-After and retries. (A `factory:` retriever that opens shards decides for itself:
        `wait_for_restart` of rankline.retrieval.open_sharded_retriever.)"""
        from rankline.pipelines.sharded import open_sharded_on_ray

        if self.retriever.fn is not open_sharded_on_ray:
            return self
        fail_fast = Factory(self.retriever.fn, self.retriever.args, {**self.retriever.kwargs, "wait_for_restart": False})
        return dataclasses.replace(self, retriever=fail_fast)

    def actor_demands(self) -> list[dict[str, float]]:
        """The Ray resources of every actor the search service starts ({"CPU": n, ...} each, CPU 1 where
        not given): each retriever and reranker replica, and the shard actors that each retriever replica
        of a sharded retriever opens (`retriever.shards`), for `actors.check_fits`."""
        from rankline.pipelines.sharded import open_sharded_on_ray

        settings = self.serve
        demands = [dict(settings.retriever_resources)] * settings.retriever_replicas
        if self.retriever.fn is open_sharded_on_ray:
            shards = self.retriever.args[1] * settings.retriever_replicas
            demands += [dict(self.retriever.kwargs.get("resources") or {})] * shards
        if self.reranker is not None:
            demands += [dict(settings.reranker_resources)] * settings.reranker_replicas
        return demands


def load_pipeline(path: str | os.PathLike) -> Pipeline:
    """The in-process pipeline a YAML/TOML pipeline file describes (`.on_ray()` it to scale out)."""
    return load_config(path).pipeline()


def load_config(path: str | os.PathLike) -> PipelineConfig:
    path = Path(path)
    data = _read(path)
    where = str(path)
    _only(where, "", data, {"retriever", "reranker", "serve"})
    if "retriever" not in data:
        raise ValueError(f"{where}: missing 'retriever' section")
    base = path.resolve().parent
    retriever, k = _retriever(where, _section(where, data, "retriever"), base)
    reranker, depth = (None, DEFAULT_DEPTH)
    if data.get("reranker") is not None:
        reranker, depth = _reranker(where, _section(where, data, "reranker"), base)
    serve_data = _section(where, data, "serve") if data.get("serve") is not None else {}
    _only(where, "serve.", serve_data, {f.name for f in fields(ServeSettings)})
    defaults = ServeSettings()
    serve_data = dict(serve_data)
    for key, value in list(serve_data.items()):
        if key == "api_keys_file":
            if not isinstance(value, str) or not value:
                raise ValueError(f"{where}: serve.api_keys_file must be a file name, got {value!r}")
            keys = base / value
            if not keys.is_file():
                raise FileNotFoundError(f"{where}: serve.api_keys_file {keys} does not exist or is not a file")
            serve_data[key] = str(keys)
            continue
        if key.endswith("_resources"):
            if not isinstance(value, dict) or not all(_is_number(v) and v >= 0 for v in value.values()):
                raise ValueError(f"{where}: serve.{key} must map resource names to amounts, got {value!r}")
            continue
        expected = type(getattr(defaults, key))
        right_type = isinstance(value, expected) or (expected is float and _is_number(value))
        if isinstance(value, bool) or not right_type or not value > 0:
            raise ValueError(f"{where}: serve.{key} must be a positive {expected.__name__}, got {value!r}")
    serve = ServeSettings(**serve_data)
    return PipelineConfig(retriever, k, reranker, depth, serve, where)


def _read(path: Path) -> dict:
    suffix = path.suffix.lower()
    with open_text(path) as fh:
        text = fh.read()
    if suffix in (".yaml", ".yml"):
        import yaml

        parse, error = yaml.safe_load, yaml.YAMLError
    elif suffix == ".toml":
        import tomllib

        parse, error = tomllib.loads, tomllib.TOMLDecodeError
    else:
        raise ValueError(f"{path}: expected a .yaml, .yml or .toml pipeline file")
    try:
        data = parse(text)
    except error as exc:  # the message carries the line and column
        raise ValueError(f"{path}: not valid {suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with a 'retriever' section at the top level")
    return data


def _section(where: str, data: Mapping, name: str) -> dict:
    value = data[name]
    if not isinstance(value, dict):
        raise ValueError(f"{where}: '{name}' must be a mapping, got {type(value).__name__}")
    return value


def _only(where: str, prefix: str, data: Mapping, allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key {prefix}{unknown[0]!r} (expected one of: {', '.join(sorted(allowed))})")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(where: str, key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def _factory(where: str, prefix: str, data: Mapping) -> Factory:
    target = data["factory"]
    if not isinstance(target, str) or ":" not in target:
        raise ValueError(f"{where}: {prefix}factory must be 'package.module:callable', got {target!r}")
    module_name, _, attr = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{where}: {prefix}factory {target!r} cannot be imported: {exc}") from None
    args, kwargs = data.get("args", []), data.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ValueError(f"{where}: {prefix}args must be a list and {prefix}kwargs a mapping")
    return Factory(fn, tuple(args), kwargs)


def _options(where: str, prefix: str, data: Mapping) -> dict:
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise ValueError(f"{where}: {prefix}options must be a mapping")
    return options


def _retriever(where: str, data: Mapping, base: Path) -> tuple[Factory, int]:
    _only(where, "retriever.", data, {"index", "method", "k", "options", "factory", "args", "kwargs", "shards", "shard_resources"})
    k = _positive_int(where, "retriever.k", data.get("k", 100))
    if "factory" in data:
        return _factory(where, "retriever.", data), k
    if "index" not in data:
        raise ValueError(f"{where}: retriever needs 'index' (a `rankline index` folder) or 'factory'")
    options = _options(where, "retriever.", data)
    from rankline.retrieval import open_retriever

    index = base / str(data["index"])
    if not index.exists():
        raise FileNotFoundError(f"{where}: retriever.index {index} does not exist")
    if "shards" in data or "shard_resources" in data:
        return _sharded_retriever(where, data, index, options), k
    return Factory(open_retriever, (str(index),), {"method": data.get("method", "dense"), **options}), k


_SHARDED_OPTIONS = {"encoder", "device", "batch_size", "nprobe"}  # nprobe: lists an IVF-PQ index probes


def _sharded_retriever(where: str, data: Mapping, index: Path, options: dict) -> Factory:
    """retriever.shards: S > 1 serves the flat dense index as S shards, one Ray actor each
    (rankline.pipelines.sharded), each asking for retriever.shard_resources ({CPU: n, <custom>: n})."""
    from rankline.pipelines.sharded import open_sharded_on_ray

    shards = _positive_int(where, "retriever.shards", data.get("shards", 1))
    if data.get("method", "dense") != "dense":
        raise ValueError(f"{where}: retriever.shards serves a dense index; method is {data.get('method')!r}")
    resources = data.get("shard_resources", {"CPU": 1})
    if not isinstance(resources, dict) or not all(_is_number(v) and v >= 0 for v in resources.values()):
        raise ValueError(f"{where}: retriever.shard_resources must map resource names to amounts, got {resources!r}")
    _only(where, "retriever.options.", options, _SHARDED_OPTIONS)
    return Factory(open_sharded_on_ray, (str(index), shards), {"resources": dict(resources), **options})


def _reranker(where: str, data: Mapping, base: Path) -> tuple[Factory, int]:
    _only(where, "reranker.", data, {"name", "model", "adapter", "depth", "options", "factory", "args", "kwargs"})
    depth = _positive_int(where, "reranker.depth", data.get("depth", DEFAULT_DEPTH))
    if "factory" in data:
        return _factory(where, "reranker.", data), depth
    if "name" not in data:
        raise ValueError(f"{where}: reranker needs 'name' (e.g. first) or 'factory'")
    options = _options(where, "reranker.", data)
    from rankline.rerankers import build_reranker, reranker_options
    from rankline.rerankers.models import DEFAULT_MODEL

    try:
        takes = {*reranker_options(str(data["name"])), "device", "dtype"}
    except ValueError as exc:
        raise ValueError(f"{where}: reranker.name: {exc}") from None
    _only(where, "reranker.options.", options, takes)
    model = str(data.get("model", DEFAULT_MODEL))
    if (base / model).exists():  # a local model folder, relative to the pipeline file
        model = str(base / model)
    if data.get("adapter") is not None:  # a LoRA adapter folder (rankline train's OUT/best), relative likewise
        options = {**options, "adapter": str(base / str(data["adapter"]))}
    return Factory(build_reranker, (str(data["name"]),), {"model": model, **options}), depth
