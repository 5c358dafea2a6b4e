"""benchmarks/linearize_fidelity.py's numbers on the tiny Llama fixture, against oracles: a linearisation whose
softmax window covers the whole sequence is softmax attention (the mixing factor cancels in the normaliser), so
its per-layer error is 0, top-1 agreement 1 and both perplexities equal; the perplexity is transformers' own
language-modelling loss; layer 0's error (its input is the embedding in both models) is the one a full forward of
the linearised model gives."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from rankline.rerankers.linear.llama import LinearSettings, linearise
from rankline.rerankers.models import load_causal_lm

T = 24



@pytest.fixture
def tiny_model(fixtures_dir: Path) -> str:
    return str(fixtures_dir / "first-parity" / "tiny-llama")


def _linearised(path: str, window: int):
    lm = load_causal_lm(path, device="cpu", dtype="float32")
    torch.manual_seed(1)
    for twin in linearise(lm.model, LinearSettings(window=window, decay="fixed")):
        with torch.no_grad():  # feature maps and mixing factors away from their initial values
            twin.feature_q.add_(0.3 * torch.randn_like(twin.feature_q))
            twin.feature_k.add_(0.3 * torch.randn_like(twin.feature_k))
            if twin.window_alpha is not None:
                twin.window_alpha.copy_(torch.randn_like(twin.window_alpha))
    return lm


def _rows(lm, n=3):
    g = torch.Generator().manual_seed(0)
    return torch.randint(3, len(lm.tokenizer), (n, T), generator=g).tolist()


def test_a_window_over_the_whole_sequence_is_softmax(tiny_model, benchmark_script) -> None:
    base = load_causal_lm(tiny_model, device="cpu", dtype="float32")
    result = benchmark_script("linearize_fidelity").fidelity(base, _linearised(tiny_model, window=T), _rows(base))
    assert max(result["layer_error"]) < 1e-5
    assert result["agreement"] == 1.0 and result["tokens"] == 3 * (T - 1)
    soft, lin = result["perplexity"]["softmax"], result["perplexity"]["linear"]
    assert lin == pytest.approx(soft, rel=1e-5)


def test_perplexity_is_the_language_modelling_loss_and_layer_0_is_the_models_own(tiny_model, benchmark_script) -> None:
    base = load_causal_lm(tiny_model, device="cpu", dtype="float32")
    linear = _linearised(tiny_model, window=4)
    rows = _rows(base)
    result = benchmark_script("linearize_fidelity").fidelity(base, linear, rows)
    ids = torch.tensor(rows)
    with torch.no_grad():
        for lm, name in ((base, "softmax"), (linear, "linear")):
            loss = lm.model(input_ids=ids, labels=ids, use_cache=False).loss  # mean over 3 x (T - 1) tokens
            assert result["perplexity"][name] == pytest.approx(math.exp(float(loss)), rel=1e-5)
    outputs = {}
    hooks = [lm.model.model.layers[0].self_attn.register_forward_hook(
        lambda m, a, o, name=name: outputs.__setitem__(name, o[0])) for lm, name in ((base, "s"), (linear, "l"))]
    sq = ref = 0.0
    with torch.no_grad():
        for row in rows:
            base.model(input_ids=torch.tensor([row]), use_cache=False)
            linear.model(input_ids=torch.tensor([row]), use_cache=False)
            sq += float((outputs["l"] - outputs["s"]).pow(2).sum())
            ref += float(outputs["s"].pow(2).sum())
    for h in hooks:
        h.remove()
    assert result["layer_error"][0] == pytest.approx(math.sqrt(sq / ref), rel=1e-5)
    assert min(result["layer_error"]) > 1e-3  # a 4-token window over 24 tokens is not softmax
    assert result["agree"] <= result["tokens"]
