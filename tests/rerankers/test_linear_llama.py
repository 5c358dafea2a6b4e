"""Linearised Llama (rankline.rerankers.linear.llama): a tiny random Llama converts, runs forward and generates;
generate() on the recurrent state equals greedy decoding by the parallel forward; padding keys are ignored;
the folder round-trips through load_causal_lm."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rankline.rerankers.linear import llama as linear_llama
from rankline.rerankers.linear.llama import LinearisedLlamaAttention, LinearSettings, linearise, save_linearised
from rankline.rerankers.models import load_causal_lm


def _tiny(settings: LinearSettings, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config).double().eval()
    with torch.no_grad():  # away from the initial values, so every parameter matters
        for layer in linearise(model, settings):
            for p in layer.transfer_parameters():
                p.add_(0.3 * torch.randn_like(p))
    return model


def _greedy_parallel(model, ids: torch.Tensor, steps: int) -> torch.Tensor:
    for _ in range(steps):
        logits = model(input_ids=ids, use_cache=False).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


@pytest.mark.parametrize("settings", [LinearSettings(window=0, decay="none"), LinearSettings(window=3, decay="fixed"),
                                      LinearSettings(window=4, decay="learned")])
def test_generate_on_the_recurrent_state_equals_parallel_greedy(settings, monkeypatch) -> None:
    model = _tiny(settings)
    assert all(isinstance(layer.self_attn, LinearisedLlamaAttention) for layer in model.model.layers)
    steps = []
    real_step = linear_llama.hybrid_attention_step
    monkeypatch.setattr(linear_llama, "hybrid_attention_step", lambda *a, **kw: steps.append(1) or real_step(*a, **kw))
    ids = torch.randint(3, 61, (2, 9), generator=torch.Generator().manual_seed(1))
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                         eos_token_id=None, pad_token_id=0, return_dict_in_generate=True)
    assert len(steps) == 7 * 2  # every token after the first generated one: one step per layer
    assert torch.equal(out.sequences, _greedy_parallel(model, ids, 8))
    state = model.model.layers[1].self_attn._states[out.cache]  # fixed size, whatever the length
    assert state.keys.shape[2] == settings.window and state.linear.shape == (2, 4, 16, 9)  # F = 2 x head dim 8


def _held_bytes(state) -> int:
    """Bytes of the storage the state's tensors keep alive (a view keeps its whole base)."""
    fields = (state.linear, state.keys, state.values, state.features, state.valid)
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in fields}.values())


@pytest.mark.parametrize("window", [0, 3])
def test_the_state_after_a_prompt_holds_the_same_memory_whatever_its_length(window) -> None:
    """After a parallel prefill the kept state must not be views into the prompt's keys, values and features."""
    from transformers import DynamicCache

    model = _tiny(LinearSettings(window=window, decay="fixed"))
    held = []
    for length in (5, 40):
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            model(input_ids=torch.randint(3, 61, (1, length)), cache=cache, use_cache=True)
        held.append(_held_bytes(model.model.layers[0].self_attn._states[cache]))
    assert held[0] == held[1]


def test_a_prompt_read_in_chunks_equals_one_pass() -> None:
    from transformers import DynamicCache

    model = _tiny(LinearSettings(window=3, decay="learned"))
    ids = torch.randint(3, 61, (2, 23), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        whole = model(input_ids=ids, use_cache=False).logits
        cache, parts = DynamicCache(config=model.config), []
        for start in range(0, 23, 5):
            parts.append(model(input_ids=ids[:, start:start + 5], cache=cache, use_cache=True).logits)
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=1e-9, atol=1e-10)


def test_left_padding_is_ignored() -> None:
    model = _tiny(LinearSettings(window=3, decay="learned"))
    row = torch.randint(3, 61, (1, 7), generator=torch.Generator().manual_seed(2))
    other = torch.randint(3, 61, (1, 10), generator=torch.Generator().manual_seed(3))
    ids = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), row], 1), other])
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
        alone = model(input_ids=row, use_cache=False).logits
    torch.testing.assert_close(batch[0, 3:], alone[0], rtol=1e-9, atol=1e-10)


def test_folder_round_trips_through_load_causal_lm(fixtures_dir: Path, tmp_path: Path) -> None:
    lm = load_causal_lm(str(fixtures_dir / "first-parity" / "tiny-llama"), device="cpu", dtype="float32")
    settings = LinearSettings(window=2, decay="learned")
    with torch.no_grad():
        for layer in linearise(lm.model, settings):
            for p in layer.transfer_parameters():
                p.add_(0.1 * torch.randn_like(p))
    save_linearised(lm.model, lm.tokenizer, settings, tmp_path / "lin")
    loaded = load_causal_lm(str(tmp_path / "lin"), device="cpu", dtype="float32")
    assert isinstance(loaded.model.model.layers[0].self_attn, LinearisedLlamaAttention)
    assert loaded.model.model.layers[0].self_attn.settings == settings
    ids = lm.tokenizer("a few words of text", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(input_ids=ids).logits, lm.model(input_ids=ids).logits)


def test_settings_and_architecture_are_checked() -> None:
    with pytest.raises(ValueError, match="decay must be one of"):
        LinearSettings(decay="slow").check()
    with pytest.raises(ValueError, match="window must be"):
        LinearSettings(window=-1).check()
    model = _tiny(LinearSettings(window=1))
    model.config.model_type = "mistral"
    with pytest.raises(ValueError, match="Llama architecture"):
        linearise(model, LinearSettings())
