"""Passage formatting and context fitting, hand-computed from rank_llm 0.26.0's rules
(../shared/fixtures/first-parity/README.md; the fixture prompts themselves are checked in test_first_parity)."""
from __future__ import annotations

import pytest

from rankline.rerankers.prompts import (
    Passage,
    fit_listwise_prompt,
    passage_content,
    rewrite_numbered_brackets,
)


@pytest.mark.parametrize(
    "passage, expected",
    [
        (Passage("a  b\n\tc"), "a b c"),
        (Passage("text", ""), "text"),
        (Passage("text", "T"), "Title: T Content: text"),
        (Passage("", "T"), "Title: T Content:"),
        (Passage("see [12] and [A] [ 4 ] [-1] [1.5] [2a]"), "see (12) and [A] [ 4 ] [-1] [1.5] [2a]"),
        (Passage("[[5]] [٣] [３]"), "[(5)] (٣) (3)"),
        (Passage("caf\u00c3\u00a9 \u201cq\u201d \ufb01ne"), 'café "q" fine'),
        (Passage("a\x0cb c\x1fd"), "a b cd"),
    ],
)
def test_passage_content(passage, expected):
    assert passage_content(passage) == expected


def test_word_cap_counts_title_words():
    assert passage_content(Passage("w " * 400, "t1 t2"), max_words=5) == "Title: t1 t2 Content: w"


def test_query_bracket_rewrite():
    assert rewrite_numbered_brackets("x [3] [y]") == "x (3) [y]"


@pytest.fixture(scope="module")
def tokenizer(fixtures_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(fixtures_dir / "first-parity" / "tiny-llama")


def test_word_fit_then_token_budget(tokenizer):
    passages = [Passage("word " * 300), Passage("x" * 3000)]  # one giant "word" defeats word capping
    prompt = fit_listwise_prompt(tokenizer, "q", passages, context_size=700)
    assert len(tokenizer.encode(prompt)) <= 700 - len(tokenizer.encode("[A] > [B]", add_special_tokens=False))
    with pytest.raises(ValueError, match="does not fit"):
        fit_listwise_prompt(tokenizer, "q", passages, context_size=700, token_budget=False)


def test_a_window_that_fits_is_untouched(tokenizer):
    passages = [Passage("short text"), Passage("other", "T")]
    assert "[B] Title: T Content: other\n" in fit_listwise_prompt(tokenizer, "q", passages)


def test_more_than_26_passages_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="at most 26"):
        fit_listwise_prompt(tokenizer, "q", [Passage("p")] * 27)
