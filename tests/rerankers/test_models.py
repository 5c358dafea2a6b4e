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
