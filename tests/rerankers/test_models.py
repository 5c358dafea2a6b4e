"""Model loading: local folders, the embedded default's cache, and the conversion lock."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from rankline.rerankers import models


def test_loads_local_folder_in_fp32_on_cpu(fixtures_dir):
    lm = models.load_causal_lm(str(fixtures_dir / "first-parity" / "tiny-llama"), device="cpu")
    assert lm.device == torch.device("cpu")
    assert lm.model.dtype == torch.float32
    assert not lm.model.training
    assert lm.tokenizer.pad_token is not None


def test_dtype_by_name(fixtures_dir):
    lm = models.load_causal_lm(str(fixtures_dir / "first-parity" / "tiny-llama"), device="cpu", dtype="bfloat16")
    assert lm.model.dtype == torch.bfloat16


def test_unknown_bare_name_is_a_clear_error():
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        models.load_causal_lm("no-such-model")


def test_concurrent_conversions_run_once_and_never_expose_a_partial_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKLINE_CACHE", str(tmp_path))
    calls = []

    def slow_convert(gguf: Path, out_dir: Path) -> None:
        calls.append(out_dir)
        (out_dir / "model.safetensors").write_text("weights")
        time.sleep(0.3)  # a reader must not see the folder before config.json is in it
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(models, "_convert_gguf", slow_convert)
    monkeypatch.setattr(models, "embedded_gguf_path", lambda: tmp_path / "fake.gguf")
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(models.embedded_model_dir())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(set(results)) == 1
    target = results[0]
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".")] == []  # no temp folder left


def test_failed_conversion_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKLINE_CACHE", str(tmp_path))

    def broken(gguf: Path, out_dir: Path) -> None:
        (out_dir / "model.safetensors").write_text("half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(models, "_convert_gguf", broken)
    monkeypatch.setattr(models, "embedded_gguf_path", lambda: tmp_path / "fake.gguf")
    with pytest.raises(RuntimeError):
        models.embedded_model_dir()
    assert not any(p.is_dir() for p in (tmp_path / "models").iterdir())


def test_a_loaded_model_travels_by_name_and_reloads_identically(fixtures_dir):
    """Pickling (how a reranker reaches a Ray actor) reloads the model from its name, in the same
    dtype, instead of shipping the weights; the copy computes the same logits."""
    import pickle

    lm = models.load_causal_lm(str(fixtures_dir / "first-parity" / "tiny-llama"), dtype="bfloat16")
    blob = pickle.dumps(lm)
    assert len(blob) < 10_000  # the name and the settings, not the weights
    copy = pickle.loads(blob)
    assert copy.model is not lm.model and copy.model.dtype == torch.bfloat16 and copy.name == lm.name
    ids = torch.tensor([[1, 5, 9, 42]])
    with torch.no_grad():
        assert torch.equal(copy.model(ids).logits, lm.model(ids).logits)


@pytest.mark.parametrize("device, message", [
    ("bogus", "unknown device 'bogus': expected cpu, cuda, cuda:N or mps"),
    ("cuda:x", "unknown device 'cuda:x'"),
])
def test_an_unknown_device_is_refused_before_loading(fixtures_dir, device, message):
    with pytest.raises(ValueError, match=message):
        models.load_causal_lm(str(fixtures_dir / "first-parity" / "tiny-llama"), device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_clear_error(fixtures_dir):
    with pytest.raises(ValueError, match=r"^device 'cuda': CUDA is not available on this machine .*use --device cpu$"):
        models.load_causal_lm(str(fixtures_dir / "first-parity" / "tiny-llama"), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_index_past_the_last_device_is_refused():
    with pytest.raises(ValueError, match="CUDA device"):
        models.check_device(f"cuda:{torch.cuda.device_count()}")
    models.check_device("cuda")  # and one that exists is fine


@pytest.mark.parametrize("name", ["/no/such/model", "./models/missing", "../missing", "~/missing-model", "a/b/c",
                                  "models/"])
def test_a_missing_model_folder_is_named_as_a_folder_not_a_hub_id(name):
    with pytest.raises(FileNotFoundError, match=f"^{name}: no such model folder$"):
        models.load_causal_lm(name, device="cpu")


def test_model_sources_are_checked_without_loading(tmp_path, fixtures_dir):
    models.check_model_source(str(fixtures_dir / "first-parity" / "tiny-llama"))
    models.check_model_source("castorini/first_mistral")  # a hub id: left to the hub (or its cache)
    with pytest.raises(ValueError, match="not a model folder \\(it has no config.json\\)"):
        models.check_model_source(str(tmp_path))
    (tmp_path / "weights.gguf").write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="weights.gguf: is a file; expected a model folder"):
        models.check_model_source(str(tmp_path / "weights.gguf"))


def test_a_folder_that_does_not_load_is_one_line_naming_it(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama", "vocab_size": "many"}')
    with pytest.raises(ValueError, match=f"^model '{tmp_path}': cannot load it: ") as info:
        models.load_causal_lm(str(tmp_path), device="cpu")
    assert "\n" not in str(info.value)


def test_build_reranker_checks_options_model_and_device_before_loading(monkeypatch, fixtures_dir):
    from rankline.rerankers import build_reranker

    monkeypatch.setattr(models, "load_causal_lm", lambda *a, **k: pytest.fail("loaded a model"))
    tiny = str(fixtures_dir / "first-parity" / "tiny-llama")
    for kwargs, error in [({"window": 10, "stride": 12}, "stride 12 is larger than window 10"),
                          ({"context_size": 0}, "context_size must be >= 1"),
                          ({"device": "tpu9"}, "unknown device 'tpu9'"),
                          ({"dtype": "int3"}, "unknown dtype 'int3'")]:
        with pytest.raises(ValueError, match=error):
            build_reranker("first", tiny, **kwargs)
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        build_reranker("first", "/no/such/model")
    with pytest.raises(ValueError, match="layer 2 does not exist: the model .* has 2 decoder layers"):
        build_reranker("blockrank", tiny, layer=2)
