"""FIRST against castorini rank_llm 0.26.0: ../shared/fixtures/first-parity (README there).

Every case must come out in rank_llm's exact order, and the first prompt of every case must be
rank_llm's engine input byte for byte."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rankline.formats import Candidates, Hit, Query
from rankline.rerankers.models import load_causal_lm
from rankline.rerankers.ranking import rerank_head
from rankline.rerankers.registry import build_reranker


def _load(fixture: Path, suffix: str):
    cases = [json.loads(line) for line in (fixture / f"cases{suffix}.jsonl").open()]
    expected = {d["qid"]: d["order"] for d in map(json.loads, (fixture / f"expected{suffix}.jsonl").open())}
    prompts = {d["qid"]: d["engine_prompt"] for d in map(json.loads, (fixture / f"prompts{suffix}.jsonl").open())}
    return cases, expected, prompts


def _candidates(case: dict) -> Candidates:
    hits = tuple(Hit(c["docid"], c["score"], c["text"], c.get("title", "")) for c in case["candidates"])
    return Candidates(Query(case["qid"], case["query"]), hits)


def _check_cases(lm, fixture: Path, suffix: str, batch_size: int) -> None:
    """rank_llm's depth is our head cut; its window schedule runs over the head it is given."""
    cases, expected, prompts = _load(fixture, suffix)
    for case in cases:
        reranker = build_reranker("first", lm, window=case["window"], stride=case["stride"], parity="rank_llm",
                                  batch_size=batch_size)
        candidates = _candidates(case)
        head = candidates.hits[: case["depth"]]
        start, end = reranker.schedule.bounds(len(head))[0]
        first_window = Candidates(candidates.query, head[start:end])
        assert reranker.engine_input(first_window) == prompts[case["qid"]], case["qid"]
        [out] = rerank_head(reranker, [candidates], depth=case["depth"])
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
    reranker = build_reranker("first", tiny, window=window, stride=stride, parity="rank_llm", batch_size=4)
    lists = [_candidates(c) for c in cases]
    for candidates, out in zip(lists, rerank_head(reranker, lists, depth=depth)):
        assert [h.docid for h in out] == expected[candidates.query.qid], candidates.query.qid


@pytest.mark.slow
def test_smollm2_cases_match_rank_llm(parity_dir):
    """The embedded default, converted from the GGUF exactly as the fixture's reference model was."""
    _check_cases(load_causal_lm(device="cpu", dtype="float32"), parity_dir, "-smollm2", batch_size=2)
