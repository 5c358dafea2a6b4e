"""Pipeline files: YAML and TOML describe the same pipeline; mistakes name the file and the key."""
from __future__ import annotations

import pytest

from rankline.pipelines.config import ServeSettings, load_config, load_pipeline
from rankline.rerankers import DEFAULT_DEPTH, build_reranker
from rankline.retrieval import open_retriever

YAML = """
retriever:
  index: idx
  method: bm25
  k: 50
  options: {k1: 0.9}
reranker:
  name: first
  model: smollm2-135m-instruct
  depth: 10
  options: {window: 4, stride: 2}
serve:
  reranker_replicas: 2
  max_k: 20
  batch_wait_timeout_s: 1
"""

TOML = """
[retriever]
index = "idx"
method = "bm25"
k = 50
options = {k1 = 0.9}

[reranker]
name = "first"
model = "smollm2-135m-instruct"
depth = 10
options = {window = 4, stride = 2}

[serve]
reranker_replicas = 2
max_k = 20
batch_wait_timeout_s = 1
"""


def test_yaml_and_toml_agree(tmp_path):
    (tmp_path / "idx").mkdir()
    (tmp_path / "p.yaml").write_text(YAML)
    (tmp_path / "p.toml").write_text(TOML)
    a, b = load_config(tmp_path / "p.yaml"), load_config(tmp_path / "p.toml")
    assert (a.retriever, a.k, a.reranker, a.depth, a.serve) == (b.retriever, b.k, b.reranker, b.depth, b.serve)
    assert a.retriever.fn is open_retriever
    assert a.retriever.args == (str(tmp_path / "idx"),)  # relative to the file, not the cwd
    assert dict(a.retriever.kwargs) == {"method": "bm25", "k1": 0.9}
    assert a.reranker.fn is build_reranker and a.reranker.args == ("first",)
    assert dict(a.reranker.kwargs) == {"model": "smollm2-135m-instruct", "window": 4, "stride": 2}
    assert a.serve == ServeSettings(reranker_replicas=2, max_k=20, batch_wait_timeout_s=1)
    pipe = load_pipeline(tmp_path / "p.yaml")  # stages are built on first use, not here
    assert (pipe.retrieve_stage.k, pipe.rerank_stage.depth) == (50, 10)


@pytest.mark.parametrize(
    "text, message",
    [
        ("retriever: {index: idx}\nrerank: {}\n", "unknown key 'rerank'"),
        ("reranker: {name: first}\n", "missing 'retriever' section"),
        ("retriever: {index: idx, kk: 3}\n", "unknown key retriever.'kk'"),
        ("retriever: {index: nowhere}\n", "retriever.index"),
        ("retriever: {index: idx, k: 0}\n", "retriever.k must be a positive integer"),
        ("retriever: {index: idx}\nreranker: {name: nope}\n", "reranker.name: unknown reranker 'nope'"),
        ("retriever: {index: idx}\nreranker: {name: first, options: {depth: 20}}\n", "unknown key reranker.options.'depth'"),
        ("retriever: {index: idx}\nreranker: {name: first, depth: 0}\n", "reranker.depth must be a positive integer"),
        ("retriever: {index: idx}\nserve: {max_k: -1}\n", "serve.max_k must be a positive int"),
        ("retriever: {index: idx}\nserve: {max_k: true}\n", "serve.max_k must be a positive int"),
        ("retriever: {index: idx}\nserve: {max_body_bytes: 0}\n", "serve.max_body_bytes must be a positive int"),
        ("retriever: {index: idx}\nserve: {ping_timeout_s: -1}\n", "serve.ping_timeout_s must be a positive float"),
        ("retriever: {index: idx}\nserve: {api_keys_file: 7}\n", "serve.api_keys_file must be a file name"),
        ("retriever: {index: idx}\nserve: {api_keys_file: idx}\n", "serve.api_keys_file .*idx does not exist or is not a file"),
        ("retriever: {factory: 'no.such.module:x'}\n", "cannot be imported"),
        ("retriever: [1, 2\n", "not valid YAML"),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_mistakes_name_the_file_and_key(tmp_path, text, message):
    (tmp_path / "idx").mkdir()
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises((ValueError, OSError), match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_factory_stages_run_in_process(tmp_path, toy):
    path = tmp_path / "toy.toml"
    path.write_text(f'[retriever]\nfactory = "{toy.__name__}:KeywordRetriever"\nk = 4\n'
                    f'[reranker]\nfactory = "{toy.__name__}:ShortestFirstReranker"\ndepth = 3\n')
    # retrieved by keywords: d6, d3, d4, d5; the top 3 shortest first (d4 58 characters, d6 61, d3 69),
    # then the tail d5 below them
    hits = load_pipeline(path).search("documents query ranks", k=4)
    assert [(h.docid, h.score) for h in hits] == [("d4", 3.0), ("d6", 2.0), ("d3", 1.0), ("d5", 0.0)]


def test_reranker_depth_defaults_to_the_one_default(tmp_path):
    (tmp_path / "idx").mkdir()
    (tmp_path / "p.yaml").write_text("retriever: {index: idx}\nreranker: {name: first}\n")
    assert load_config(tmp_path / "p.yaml").depth == DEFAULT_DEPTH


def test_served_sharded_retriever_fails_fast_and_others_are_unchanged(tmp_path):
    """Behind Serve a pipeline file's sharded retriever does not wait for a dead shard's restart (the
    request gets 503); the file's pipeline (batch jobs, Pipeline.on_ray) waits, and a pipeline without
    shards is served as written."""
    from rankline.pipelines.sharded import open_sharded_on_ray

    (tmp_path / "idx").mkdir()
    path = tmp_path / "sharded.yaml"
    path.write_text("retriever:\n  index: idx\n  shards: 3\n  options: {batch_size: 8, nprobe: 64}\n")
    config = load_config(path)
    assert config.retriever.fn is open_sharded_on_ray and "wait_for_restart" not in config.retriever.kwargs
    assert (config.retriever.kwargs["batch_size"], config.retriever.kwargs["nprobe"]) == (8, 64)
    served = config.served().retriever
    assert (served.fn, served.args) == (config.retriever.fn, config.retriever.args)
    assert dict(served.kwargs) == {**config.retriever.kwargs, "wait_for_restart": False}
    path.write_text("retriever:\n  index: idx\n  method: bm25\n")
    plain = load_config(path)
    assert plain.served() is plain


def test_actor_demands_of_the_service(tmp_path):
    """What `rankline serve` checks against the cluster before starting: 2 retriever replicas of 1 CPU
    each opening 3 shard actors of 0.5 CPU and 1 shard_host, and one reranker replica with a GPU."""
    (tmp_path / "idx").mkdir()
    path = tmp_path / "pipe.yaml"
    path.write_text("retriever:\n  index: idx\n  shards: 3\n  shard_resources: {CPU: 0.5, shard_host: 1}\n"
                    "reranker:\n  name: first\nserve:\n  retriever_replicas: 2\n  reranker_resources: {CPU: 1, GPU: 1}\n")
    demands = load_config(path).actor_demands()
    assert demands == [{"CPU": 1}] * 2 + [{"CPU": 0.5, "shard_host": 1}] * 6 + [{"CPU": 1, "GPU": 1}]
    path.write_text("retriever:\n  index: idx\n  method: bm25\n")
    assert load_config(path).actor_demands() == [{"CPU": 1}]
