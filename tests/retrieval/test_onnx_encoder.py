"""The ONNX Runtime encoder backend: same embeddings as PyTorch, exported once into the cache."""
from __future__ import annotations

import numpy as np
import pytest

from rankline.retrieval import onnx_encoder
from rankline.retrieval.encoder import load_encoder

TEXTS = [
    "a short one",
    "Glucocorticoids suppress inflammation by inhibiting cytokine transcription in macrophages " * 12,
    "",
    "Vitamin D deficiency and bone density in older adults: a randomised trial.",
]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKLINE_CACHE", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("model", ["tiny", "all-MiniLM-L6-v2"])
def test_onnx_embeddings_equal_pytorch(model, tiny_encoder, cache):
    name = tiny_encoder if model == "tiny" else model
    torch_side = load_encoder(name, backend="torch")
    onnx_side = load_encoder(name, backend="onnx")
    assert (torch_side.backend, onnx_side.backend) == ("torch", "onnx")
    assert onnx_side.weights_sha256 == torch_side.weights_sha256  # an index does not care which backend built it
    # one batch mixing lengths (padding inside the batch), then one text per batch
    for batch_size in (4, 1):
        np.testing.assert_allclose(onnx_side.encode_documents(TEXTS, batch_size=batch_size),
                                   torch_side.encode_documents(TEXTS, batch_size=batch_size), atol=1e-5)
    np.testing.assert_allclose(onnx_side.encode_queries(TEXTS[:2]), torch_side.encode_queries(TEXTS[:2]), atol=1e-5)
    assert (cache / "onnx" / f"{onnx_side.weights_sha256}-v1" / "model.onnx").is_file()


def test_export_happens_once_and_auto_uses_it(tiny_encoder, cache, monkeypatch):
    load_encoder(tiny_encoder, backend="onnx")

    def no_second_export(*_):
        raise AssertionError("exported again although the cache holds the model")

    monkeypatch.setattr(onnx_encoder, "_export", no_second_export)
    assert load_encoder(tiny_encoder).backend == "onnx"  # auto on the CPU with onnxruntime installed


def test_failed_export_falls_back_with_a_warning_or_raises_when_onnx_is_required(tiny_encoder, cache, monkeypatch):
    def broken(_model, _names, folder):
        (folder / "model.onnx").write_text("half")
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(onnx_encoder, "_export", broken)
    with pytest.warns(UserWarning, match="runs in PyTorch: no ONNX export .*unsupported operator"):
        assert load_encoder(tiny_encoder).backend == "torch"
    assert not list((cache / "onnx").glob("*/model.onnx"))  # nothing half-written left in the cache
    with pytest.raises(ValueError, match="cannot run encoder .* in ONNX Runtime: unsupported operator"):
        load_encoder(tiny_encoder, backend="onnx")
    with pytest.raises(ValueError, match="backend must be one of auto, torch, onnx"):
        load_encoder(tiny_encoder, backend="tensorrt")
