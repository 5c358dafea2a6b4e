"""FIRST against castorini rank_llm 0.26.0: ../shared/fixtures/first-parity (README there).

Every case must come out in rank_llm's exact order, and the first prompt of every case must be
rank_llm's engine input byte for byte."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from rankline.rerankers.first import FirstReranker  # noqa: E402
from rankline.rerankers.models import load_causal_lm  # noqa: E402
from rankline.rerankers.ranking import WindowRequest  # noqa: E402
from rankline.formats import Hit, Query  # noqa: E402


def _load(fixture: Path, suffix: str):
    cases = [json.loads(line) for line in (fixture / f"cases{suffix}.jsonl").open()]
    expected = {d["qid"]: d["order"] for d in map(json.loads, (fixture / f"expected{suffix}.jsonl").open())}
    prompts = {d["qid"]: d["engine_prompt"] for d in map(json.loads, (fixture / f"prompts{suffix}.jsonl").open())}
    return cases, expected, prompts


def _check_cases(lm, fixture: Path, suffix: str, batch_size: int) -> None:
    cases, expected, prompts = _load(fixture, suffix)
    for case in cases:
        reranker = FirstReranker(lm, window=case["window"], stride=case["stride"], depth=case["depth"],
                                 parity="rank_llm", batch_size=batch_size)
        query = Query(case["qid"], case["query"])
        hits = [Hit(c["docid"], c["score"], c["text"], c.get("title", "")) for c in case["candidates"]]
        start, end = reranker.schedule.bounds(len(hits))[0]
        assert reranker.engine_input(WindowRequest(query, tuple(hits[start:end]))) == prompts[case["qid"]], case["qid"]
        out = reranker.rerank(query, hits)
        assert [h.docid for h in out] == expected[case["qid"]], case["qid"]
        assert all(a.score > b.score for a, b in zip(out, out[1:]))


@pytest.fixture(scope="module")
def parity_dir(fixtures_dir) -> Path:
    return fixtures_dir / "first-parity"


@pytest.fixture(scope="module")
def tiny(parity_dir):
    return load_causal_lm(str(parity_dir / "tiny-llama"), device="cpu")


def test_tiny_llama_cases_match_rank_llm(tiny, parity_dir):
    _check_cases(tiny, parity_dir, "", batch_size=1)


def test_tiny_llama_cases_batched_across_queries_match_rank_llm(tiny, parity_dir):
    """All cases reranked in one call: windows of different queries share left-padded forward passes."""
    cases, expected, _ = _load(parity_dir, "")
    settings = {(c["window"], c["stride"], c["depth"]) for c in cases}
    assert len(settings) == 1
    window, stride, depth = settings.pop()
    reranker = FirstReranker(tiny, window=window, stride=stride, depth=depth, parity="rank_llm", batch_size=4)
    queries = [Query(c["qid"], c["query"]) for c in cases]
    hits = [[Hit(d["docid"], d["score"], d["text"], d.get("title", "")) for d in c["candidates"]] for c in cases]
    for query, out in zip(queries, reranker.rerank_batch(queries, hits)):
        assert [h.docid for h in out] == expected[query.qid], query.qid


@pytest.mark.slow
def test_smollm2_cases_match_rank_llm(parity_dir):
    """The embedded default, converted from the GGUF exactly as the fixture's reference model was."""
    _check_cases(load_causal_lm(device="cpu", dtype="float32"), parity_dir, "-smollm2", batch_size=2)
