"""The LLM labeler on the tiny random Llama fixture: oracle = an unpadded single forward pass."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from rankline.evaluation.labeler import LabelCache, LabelPrompt, Pair, RelevanceLabeler


PAIRS = [
    Pair("q1", "what is a cat", "d1", "A cat is a small domesticated carnivorous mammal."),
    Pair("q1", "what is a cat", "d2", "Stock markets fell sharply on Monday."),
    Pair("q2", "boiling point of water", "d3", "Water boils at 100 degrees Celsius at sea level, which is a long " * 5),
]


@pytest.fixture(scope="module")
def tiny(fixtures_dir):
    path = fixtures_dir / "first-parity" / "tiny-llama"
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    return model, tokenizer


def _oracle(labeler: RelevanceLabeler, pair: Pair) -> np.ndarray:
    ids = torch.tensor([labeler._encode(labeler._text(pair))])
    with torch.inference_mode():
        logits = labeler.model(input_ids=ids).logits[0, -1]
    return torch.softmax(logits[labeler._grade_ids].double(), -1).numpy()


def test_distributions_equal_unpadded_single_passes(tiny):
    model, tokenizer = tiny
    labeler = RelevanceLabeler(model, tokenizer, model_name="tiny", batch_size=3)
    dists = labeler.label(PAIRS)
    for pair in PAIRS:
        p = dists[pair.qid][pair.docid]
        assert p.shape == (4,) and p.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(p, _oracle(labeler, pair), atol=1e-5)  # left padding changes nothing


def test_grade_tokens_are_the_digits(tiny):
    model, tokenizer = tiny
    labeler = RelevanceLabeler(model, tokenizer, model_name="tiny")
    assert [tokenizer.decode([i]).strip() for i in labeler._grade_ids] == ["0", "1", "2", "3"]
    assert labeler._text(PAIRS[0]).endswith(labeler._prefix)


def test_cache_makes_a_rerun_free_and_is_keyed_by_prompt(tiny, tmp_path, monkeypatch):
    model, tokenizer = tiny
    cache = LabelCache(tmp_path / "labels.sqlite")
    first = RelevanceLabeler(model, tokenizer, model_name="tiny", batch_size=2, cache=cache).label(PAIRS[:2])
    again = RelevanceLabeler(model, tokenizer, model_name="tiny", batch_size=2, cache=cache)
    monkeypatch.setattr(again, "_forward", lambda batch: pytest.fail(f"recomputed {batch}"))
    cached = again.label(PAIRS[:2])
    for pair in PAIRS[:2]:
        np.testing.assert_allclose(cached[pair.qid][pair.docid], first[pair.qid][pair.docid], atol=1e-12)
    # A different prompt is a different key: it must compute.
    other = RelevanceLabeler(model, tokenizer, model_name="tiny", cache=cache,
                             prompt=LabelPrompt(template="Q: {query}\nP: {passage}\nScore 0-3."))
    calls = []
    real = other._forward
    monkeypatch.setattr(other, "_forward", lambda batch: calls.append(len(batch)) or real(batch))
    other.label(PAIRS[:1])
    assert calls == [1]


def test_prompt_validation():
    with pytest.raises(ValueError, match="placeholder"):
        LabelPrompt(template="no fields")
    assert LabelPrompt().key != LabelPrompt(max_passage_tokens=64).key


@pytest.mark.slow
def test_embedded_smollm2_labels_real_pairs(tmp_path, monkeypatch):
    """The default model: every grade is one token after the answer prefix; distributions are proper."""
    from rankline.rerankers.models import load_causal_lm

    lm = load_causal_lm()
    labeler = RelevanceLabeler(lm.model, lm.tokenizer, model_name=lm.name, batch_size=2)
    assert [lm.tokenizer.decode([i]).strip() for i in labeler._grade_ids] == ["0", "1", "2", "3"]
    dists = labeler.label(PAIRS[:2])
    for pair in PAIRS[:2]:
        p = dists[pair.qid][pair.docid]
        assert p.sum() == pytest.approx(1.0) and np.all(p > 0)
        np.testing.assert_allclose(p, _oracle(labeler, pair), atol=1e-4)
