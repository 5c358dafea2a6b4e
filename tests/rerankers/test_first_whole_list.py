"""FIRST over a whole candidate list in one window: identifiers beyond Z that are each one token of the tokenizer
(checked against the tokenizer's own token strings), a window of 100 read from one next-token distribution (against
a hand-made forward pass), one forward pass per query when the window covers the depth (counted), windows of at
most 26 exactly as before (A..Z), and a linearised model's prompt budget not capped by the trained length."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from rankline.formats import Candidates, Hit, Query
from rankline.rerankers.first import FirstReranker, identifier_token_ids
from rankline.rerankers.listwise import ListwiseGenerationReranker, parse_ranking
from rankline.rerankers.models import load_causal_lm, resolve_model_path
from rankline.rerankers.prompts import (LETTERS, Passage, fit_listwise_prompt, ranking_output_tokens,
                                        single_token_identifiers)
from rankline.rerankers.ranking import rerank_head
from rankline.rerankers.registry import build_reranker

WORDS = "paris museum art river bridge vienna palace tower europe history".split()


def _hits(n: int, seed: int) -> tuple[Hit, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(Hit(f"d{i}", float(n - i), " ".join(WORDS[j] for j in torch.randint(0, 10, (4,), generator=g)))
                 for i in range(n))


@pytest.fixture(scope="module")
def tiny_dir(fixtures_dir: Path) -> str:
    return str(fixtures_dir / "first-parity" / "tiny-llama")


@pytest.fixture(scope="module")
def lm(tiny_dir):
    return load_causal_lm(tiny_dir, device="cpu")


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m-instruct"))


@pytest.mark.parametrize("n", [100, 1000])
def test_identifiers_are_unique_single_tokens_of_smollm2(smollm2_tokenizer, n) -> None:
    tok = smollm2_tokenizer
    labels = single_token_identifiers(tok, n)
    assert len(labels) == n == len(set(labels)) and labels[:26] == LETTERS
    assert labels[26:29] == ("AA", "AB", "AC")  # capitals by length, then alphabetically
    for label in labels:  # byte-level BPE: an ASCII token's string is its text
        assert tok.convert_ids_to_tokens(tok.encode(f"[{label}]", add_special_tokens=False)) == ["[", label, "]"]
        assert tok.convert_ids_to_tokens(tok.encode(f" > [{label}]", add_special_tokens=False)) == \
            ["Ġ>", "Ġ[", label, "]"]
    assert single_token_identifiers(tok, n // 2) == labels[: n // 2]  # a prefix: the order does not depend on n


def test_too_many_identifiers_is_a_clear_error(lm) -> None:
    assert len(single_token_identifiers(lm.tokenizer, 131)) == 131
    with pytest.raises(ValueError, match="needs 132 single-token identifiers, and this tokenizer supplies only 131"):
        single_token_identifiers(lm.tokenizer, 132)
    with pytest.raises(ValueError, match="supplies only 131"):
        build_reranker("first", lm, window=132)


def test_windows_up_to_26_keep_the_letters(lm) -> None:
    assert single_token_identifiers(lm.tokenizer, 20) == LETTERS[:20]
    reranker = build_reranker("first", lm, window=20)
    window = Candidates(Query("q", "paris art"), _hits(20, 1))
    passages = [Passage(h.text) for h in window.hits]
    assert reranker.prompt(window) == fit_listwise_prompt(lm.tokenizer, "paris art", passages, token_budget=True)
    assert reranker._letter_of == identifier_token_ids(lm.tokenizer)
    assert sorted(reranker._letter_of.values()) == list(range(26))
    assert ranking_output_tokens(lm.tokenizer, 20) == ranking_output_tokens(lm.tokenizer, 20, LETTERS)


def _count_forwards(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls, handle


def test_a_window_of_100_reads_100_scores_in_one_forward_pass(lm) -> None:
    reranker = build_reranker("first", lm, window=100, context_size=16384)
    labels = reranker.labels
    assert len(labels) == 100 and len(set(labels)) == 100
    window = Candidates(Query("q", "paris art"), _hits(100, 2))
    prompt = reranker.engine_input(window)
    for i in (0, 25, 26, 60, 99):
        assert f"\n[{labels[i]}] {window.hits[i].text}\n" in prompt  # the passage and its label, uncut
    ids = torch.tensor([lm.tokenizer.encode(prompt)])
    with torch.inference_mode():
        logprobs = torch.log_softmax(lm.model(input_ids=ids).logits[0, -1].float(), dim=-1)
    token_of = [lm.tokenizer.convert_tokens_to_ids(label) for label in labels]  # one token per label
    assert len(set(token_of)) == 100 and all(lm.tokenizer.decode([t]) == lab for t, lab in zip(token_of, labels))
    expected = sorted(range(100), key=lambda p: (-logprobs[token_of[p]].item(), p))
    calls, handle = _count_forwards(lm.model)
    try:
        assert reranker.rank_windows([window])[0] == expected
        assert len(calls) == 1
        calls.clear()
        out = rerank_head(reranker, [window], depth=100)[0]
        assert len(calls) == 1  # window == depth: one pass, no slide
        assert [h.docid for h in out] == [window.hits[p].docid for p in expected]
        calls.clear()
        rerank_head(build_reranker("first", lm, window=20, stride=10), [window], depth=100)
        assert len(calls) == 9  # the sliding schedule it replaces: (80, 100), (70, 90), ..., (0, 20)
    finally:
        handle.remove()


def test_listwise_generation_parses_identifiers_beyond_z(lm) -> None:
    labels = single_token_identifiers(lm.tokenizer, 40)
    text = f"[{labels[30]}] > [B] > [{labels[39]}] > [zz] > [{labels[30]}]"
    assert parse_ranking(text, 40, labels)[:3] == [30, 1, 39]
    assert parse_ranking("[B] > [AB] > [a]", 3) == [1, 0, 2]  # A..Z only by default
    reranker = build_reranker("listwise", lm, window=40, context_size=16384)
    assert isinstance(reranker, ListwiseGenerationReranker) and reranker.labels == labels
    answer = " > ".join(f"[{label}]" for label in labels)
    assert ranking_output_tokens(lm.tokenizer, 40, labels) == len(lm.tokenizer.encode(answer, add_special_tokens=False))


def test_a_linearised_model_is_not_capped_at_its_trained_length_and_reads_in_chunks(tiny_dir, monkeypatch) -> None:
    import rankline.rerankers.first as first_module
    from rankline.rerankers.linear.llama import LinearSettings, linearise

    lm = load_causal_lm(tiny_dir, device="cpu")
    assert FirstReranker(lm, FirstReranker.Options(context_size=40000)).context_size == 16384
    linearise(lm.model, LinearSettings(window=8))
    reranker = FirstReranker(lm, FirstReranker.Options(window=100, context_size=40000))
    assert reranker.context_size == 40000
    window = Candidates(Query("q", "paris art"), _hits(100, 3))
    ids = torch.tensor([lm.tokenizer.encode(reranker.engine_input(window))])
    with torch.inference_mode():
        logprobs = torch.log_softmax(lm.model(input_ids=ids, use_cache=False).logits[0, -1].float(), dim=-1)
    token_of = [lm.tokenizer.convert_tokens_to_ids(label) for label in reranker.labels]
    expected = sorted(range(100), key=lambda p: (-logprobs[token_of[p]].item(), p))  # one pass over the whole prompt
    monkeypatch.setattr(first_module, "LINEAR_PREFILL_CHUNK", 500)
    calls, handle = _count_forwards(lm.model)
    try:
        out = rerank_head(reranker, [window], depth=100)[0]
    finally:
        handle.remove()
    assert len(calls) == -(-ids.shape[1] // 500) > 1  # one pass over the prompt, 500 tokens per call
    assert [h.docid for h in out] == [window.hits[p].docid for p in expected]
