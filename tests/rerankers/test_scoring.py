"""FIRST's default mode, the listwise generation baseline and query likelihood against unbatched
reference computations with the tiny Llama (plain forward passes, one sequence at a time)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from rankline.rerankers.batching import left_pad  # noqa: E402
from rankline.rerankers.first import FirstReranker, identifier_token_ids, window_order  # noqa: E402
from rankline.rerankers.listwise import ListwiseGenerationReranker, parse_ranking  # noqa: E402
from rankline.rerankers.models import load_causal_lm  # noqa: E402
from rankline.rerankers.prompts import Passage, query_likelihood_prompt  # noqa: E402
from rankline.rerankers.query_likelihood import QueryLikelihoodReranker  # noqa: E402
from rankline.rerankers.ranking import WindowRequest  # noqa: E402
from rankline.rerankers.registry import build_reranker  # noqa: E402
from rankline.formats import Hit, Query  # noqa: E402

WORDS = "paris museum art river bridge vienna palace tower europe history".split()


def _hits(n: int, seed: int) -> list[Hit]:
    g = torch.Generator().manual_seed(seed)
    return [
        Hit(f"d{seed}-{i}", float(n - i), " ".join(WORDS[j] for j in torch.randint(0, 10, (8 + i % 5,), generator=g)))
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def lm(fixtures_dir):
    return load_causal_lm(str(fixtures_dir / "first-parity" / "tiny-llama"), device="cpu")


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
    reranker = FirstReranker(lm, window=20, stride=10, depth=100, batch_size=3)
    letter_of = identifier_token_ids(lm.tokenizer)
    for seed, n in [(1, 20), (2, 13)]:
        request = WindowRequest(Query("q", "paris art"), tuple(_hits(n, seed)))
        logprobs = _last_logprobs(lm, reranker.engine_input(request))
        best = {p: max(logprobs[t].item() for t, q in letter_of.items() if q == p) for p in range(n)}
        expected = sorted(range(n), key=lambda p: (-best[p], p))
        assert reranker.rank_windows([request])[0] == expected


def test_first_batched_equals_one_query_at_a_time(lm):
    queries = [Query("a", "paris art"), Query("b", "vienna bridge"), Query("c", "tower")]
    lists = [_hits(45, 3), _hits(21, 4), _hits(5, 5)]
    one = FirstReranker(lm, batch_size=1)
    many = FirstReranker(lm, batch_size=8)
    singles = [one.rerank(q, h) for q, h in zip(queries, lists)]
    assert many.rerank_batch(queries, lists) == singles
    for out in singles:
        assert all(a.score > b.score for a, b in zip(out, out[1:]))
    assert FirstReranker(lm).batch_size == 1  # the CPU default: padded batches cost more than they save here


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


def test_listwise_generation_follows_greedy_decoding(lm):
    reranker = ListwiseGenerationReranker(lm, batch_size=2)
    requests = [WindowRequest(Query("q", "paris art"), tuple(_hits(n, s))) for s, n in [(6, 20), (7, 4)]]
    perms = reranker.rank_windows(requests)
    for request, perm in zip(requests, perms):
        ids = torch.tensor([lm.tokenizer.encode(reranker.prompt(request))])
        with torch.inference_mode():
            out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                    max_new_tokens=80, pad_token_id=lm.tokenizer.pad_token_id)
        text = lm.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        assert perm == parse_ranking(text, len(request.hits))


def test_query_likelihood_equals_unbatched_mean_logprob(lm):
    reranker = QueryLikelihoodReranker(lm, batch_size=5)
    queries = [Query("a", "paris art history"), Query("b", "bridge")]
    lists = [_hits(7, 8), _hits(4, 9)]
    scores = reranker.score_batch(queries, lists)
    for query, hits, got in zip(queries, lists, scores):
        q_ids = lm.tokenizer.encode(query.text, add_special_tokens=False)
        for hit, value in zip(hits, got):
            prompt = lm.tokenizer.encode(query_likelihood_prompt(lm.tokenizer, Passage(hit.text)))
            ids = torch.tensor([prompt + q_ids])
            with torch.inference_mode():
                lp = torch.log_softmax(lm.model(input_ids=ids).logits[0].float(), dim=-1)
            expected = sum(lp[len(prompt) - 1 + j, t].item() for j, t in enumerate(q_ids)) / len(q_ids)
            assert value == pytest.approx(expected, abs=1e-4)
    out = reranker.rerank(queries[0], lists[0])
    assert [h.docid for h in out] == [lists[0][i].docid for i in sorted(range(7), key=lambda i: -scores[0][i])]


def test_query_likelihood_depth_keeps_the_tail_in_order(lm):
    hits = _hits(6, 10)
    out = QueryLikelihoodReranker(lm, depth=3).rerank(Query("q", "paris"), hits)
    assert [h.docid for h in out[3:]] == [h.docid for h in hits[3:]]
    assert [h.score for h in out] == [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]


def test_registry_builds_each_reranker_and_rejects_foreign_options(lm):
    assert isinstance(build_reranker("first", lm, parity="rank_llm"), FirstReranker)
    assert isinstance(build_reranker("listwise", lm, window=10), ListwiseGenerationReranker)
    assert isinstance(build_reranker("query-likelihood", lm, depth=10), QueryLikelihoodReranker)
    with pytest.raises(ValueError, match="parity"):
        build_reranker("query-likelihood", lm, parity="rank_llm")
    with pytest.raises(ValueError, match="unknown reranker"):
        build_reranker("nope", lm)
