"""FIRST's default mode, the listwise generation baseline and query likelihood against unbatched
reference computations with the tiny Llama (plain forward passes, one sequence at a time)."""
from __future__ import annotations

import pickle
import subprocess
import sys
from functools import partial

import pytest
import torch

from rankline.formats import Candidates, Hit, Query
from rankline.rerankers.batching import left_pad
from rankline.rerankers.blockrank import BlockRankReranker
from rankline.rerankers.first import FirstReranker, identifier_token_ids, window_order
from rankline.rerankers.listwise import ListwiseGenerationReranker, parse_ranking
from rankline.rerankers.models import load_causal_lm
from rankline.rerankers.prompts import Passage, query_likelihood_prompt, ranking_output_tokens
from rankline.rerankers.query_likelihood import QueryLikelihoodReranker
from rankline.rerankers.registry import build_reranker, reranker_options

WORDS = "paris museum art river bridge vienna palace tower europe history".split()


def _hits(n: int, seed: int) -> tuple[Hit, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(
        Hit(f"d{seed}-{i}", float(n - i), " ".join(WORDS[j] for j in torch.randint(0, 10, (8 + i % 5,), generator=g)))
        for i in range(n)
    )


@pytest.fixture(scope="module")
def tiny_dir(fixtures_dir):
    return str(fixtures_dir / "first-parity" / "tiny-llama")


@pytest.fixture(scope="module")
def lm(tiny_dir):
    return load_causal_lm(tiny_dir, device="cpu")


def _last_logprobs(lm, text: str):
    ids = torch.tensor([lm.tokenizer.encode(text)])
    with torch.inference_mode():
        return torch.log_softmax(lm.model(input_ids=ids).logits[0, -1].float(), dim=-1)


def test_left_padding_computes_every_row_as_alone(lm):
    seqs = [lm.tokenizer.encode("a b c d e f"), lm.tokenizer.encode("x")]
    batch = left_pad(seqs, lm.tokenizer.pad_token_id, "cpu")
    with torch.inference_mode():
        batched = lm.model(**batch.model_inputs()).logits[:, -1]
        for row, seq in enumerate(seqs):
            alone = lm.model(input_ids=torch.tensor([seq])).logits[0, -1]
            torch.testing.assert_close(batched[row], alone, atol=1e-5, rtol=1e-5)


def test_identifier_tokens_decode_to_single_capitals(lm):
    letter_of = identifier_token_ids(lm.tokenizer)
    assert sorted(set(letter_of.values())) == list(range(26))
    assert all(lm.tokenizer.decode([t]) == chr(65 + p) for t, p in letter_of.items())


def test_window_order_modes_on_a_hand_made_distribution():
    letter_of = {40: 0, 41: 1, 42: 2, 43: 3, 44: 2}  # token 44 is a second variant of "C"
    logprobs = torch.full((64,), -50.0)
    logprobs[:30] = torch.linspace(-1.0, -10.0, 30)
    logprobs[[40, 41, 42, 43, 44]] = torch.tensor([-0.5, -60.0, -2.0, -55.0, -0.2])
    # rank_llm: only letters in the top 30 count (C by its best variant, then A); B and D follow in order
    assert window_order(logprobs, 4, letter_of, "rank_llm") == [2, 0, 1, 3]
    # default: every identifier is ranked by its best variant, so D (-55) goes ahead of B (-60)
    assert window_order(logprobs, 4, letter_of, None) == [2, 0, 3, 1]
    assert window_order(logprobs, 3, letter_of, None) == [2, 0, 1]  # letters beyond the window ignored


def test_first_default_mode_orders_each_window_by_identifier_logprobs(lm):
    reranker = build_reranker("first", lm, batch_size=3)
    letter_of = identifier_token_ids(lm.tokenizer)
    for seed, n in [(1, 20), (2, 13)]:
        window = Candidates(Query("q", "paris art"), _hits(n, seed))
        logprobs = _last_logprobs(lm, reranker.engine_input(window))
        best = {p: max(logprobs[t].item() for t, q in letter_of.items() if q == p) for p in range(n)}
        expected = sorted(range(n), key=lambda p: (-best[p], p))
        assert reranker.rank_windows([window])[0] == expected


def test_first_batched_equals_one_query_at_a_time(lm):
    lists = [Candidates(Query("a", "paris art"), _hits(45, 3)), Candidates(Query("b", "vienna bridge"), _hits(21, 4)),
             Candidates(Query("c", "tower"), _hits(5, 5))]
    one = build_reranker("first", lm, batch_size=1)
    many = build_reranker("first", lm, batch_size=8)
    singles = [one.rerank_batch([c])[0] for c in lists]
    assert many.rerank_batch(lists) == singles
    for candidates, out in zip(lists, singles):
        assert sorted(h.docid for h in out) == sorted(h.docid for h in candidates.hits)  # the whole list, every window
        assert [h.score for h in out] == [float(len(out) - i) for i in range(len(out))]
    assert build_reranker("first", lm).batch_size == 1  # the CPU default: padded batches cost more than they save here


@pytest.mark.parametrize(
    "text, n, expected",
    [
        ("[B] > [A] > [C]", 3, [1, 0, 2]),
        ("[C] > [C] > [Z] > [A]", 3, [2, 0, 1]),  # repeat and out-of-window dropped, B appended
        ("no ranking at all", 2, [0, 1]),
        ("[ B ]>[A]", 2, [1, 0]),
    ],
)
def test_parse_ranking(text, n, expected):
    assert parse_ranking(text, n) == expected


def _greedy(lm, prompt: str, max_new: int) -> list[int]:
    """Greedy decoding by hand: the prompt alone, every step a full forward pass and an argmax."""
    eos = lm.model.generation_config.eos_token_id
    stop = set(eos if isinstance(eos, list) else [eos])
    ids, out = lm.tokenizer.encode(prompt), []
    for _ in range(max_new):
        with torch.inference_mode():
            token = lm.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax().item()
        if token in stop:
            break
        ids.append(token)
        out.append(token)
    return out


def test_listwise_generation_generates_the_greedy_tokens(lm):
    """Windows of 20 and 4 passages batched (left-padded, with the cache) generate the same token ids as a
    hand-written greedy loop over each prompt alone, and the order is what those tokens say."""
    reranker = build_reranker("listwise", lm, batch_size=2)
    windows = [Candidates(Query("q", "paris art"), _hits(n, s)) for s, n in [(6, 20), (7, 4)]]
    generated = reranker.generate(windows)
    for window, ids in zip(windows, generated):
        expected = _greedy(lm, reranker.prompt(window), ranking_output_tokens(lm.tokenizer, len(window.hits)))
        assert len(expected) > 0 and ids == expected
    texts = lm.tokenizer.batch_decode(generated, skip_special_tokens=True)
    assert reranker.rank_windows(windows) == [parse_ranking(t, len(w.hits)) for t, w in zip(texts, windows)]


def test_query_likelihood_equals_unbatched_mean_logprob(lm):
    reranker = build_reranker("query-likelihood", lm, batch_size=5)
    lists = [Candidates(Query("a", "paris art history"), _hits(7, 8)), Candidates(Query("b", "bridge"), _hits(4, 9))]
    scores = reranker.score_batch(lists)
    for candidates, got in zip(lists, scores):
        q_ids = lm.tokenizer.encode(candidates.query.text, add_special_tokens=False)
        for hit, value in zip(candidates.hits, got):
            prompt = lm.tokenizer.encode(query_likelihood_prompt(lm.tokenizer, Passage(hit.text)))
            ids = torch.tensor([prompt + q_ids])
            with torch.inference_mode():
                lp = torch.log_softmax(lm.model(input_ids=ids).logits[0].float(), dim=-1)
            expected = sum(lp[len(prompt) - 1 + j, t].item() for j, t in enumerate(q_ids)) / len(q_ids)
            assert value == pytest.approx(expected, abs=1e-4)
    out = reranker.rerank_batch(lists[:1])[0]
    alone = reranker.score_batch(lists[:1])[0]  # the same batches as rerank_batch's (others round differently)
    assert alone == pytest.approx(scores[0], abs=1e-4)
    best_first = sorted(range(7), key=lambda i: -alone[i])
    assert [(h.docid, h.score) for h in out] == [(lists[0].hits[i].docid, alone[i]) for i in best_first]


def test_registry_builds_each_reranker_and_checks_options_before_loading(lm, tiny_dir):
    assert isinstance(build_reranker("first", lm, parity="rank_llm"), FirstReranker)
    assert isinstance(build_reranker("listwise", lm, window=10), ListwiseGenerationReranker)
    assert isinstance(build_reranker("query-likelihood", lm, batch_size=3), QueryLikelihoodReranker)
    blockrank = build_reranker("blockrank", tiny_dir, device="cpu", layer=1, calibrate=True)  # loaded by name
    assert isinstance(blockrank, BlockRankReranker) and blockrank.options.calibrate
    assert reranker_options("query-likelihood") == {"batch_size": 16, "progress": False}
    assert set(reranker_options("first")) == set(reranker_options("listwise")) | {"parity"}
    # The name, the options and their values are checked before the (here nonexistent) model loads.
    with pytest.raises(ValueError, match="does not take option.* parity"):
        build_reranker("query-likelihood", "/no/such/model", parity="rank_llm")
    with pytest.raises(ValueError, match="does not take option.* depth"):
        build_reranker("first", "/no/such/model", depth=10)
    with pytest.raises(ValueError, match="window must be <= 26 with parity rank_llm"):
        build_reranker("first", "/no/such/model", window=27, parity="rank_llm")
    with pytest.raises(ValueError, match="unknown reranker 'nope'"):
        build_reranker("nope", "/no/such/model")
    with pytest.raises(ValueError, match="already loaded"):
        build_reranker("first", lm, device="cpu")


def test_a_reranker_factory_pickles_by_reference_and_builds_where_it_runs(tiny_dir):
    """What a Ray actor receives: the function and its arguments, no model."""
    factory = pickle.loads(pickle.dumps(partial(build_reranker, "first", tiny_dir, device="cpu", window=4)))
    reranker = factory()
    assert isinstance(reranker, FirstReranker) and reranker.schedule.window == 4


def test_importing_the_package_and_reading_options_loads_no_torch():
    """`rankline --help` and option validation stay instant: torch and transformers load with a model."""
    code = ("import sys, rankline.rerankers as r; [r.reranker_options(n) for n in r.RERANKERS]; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
