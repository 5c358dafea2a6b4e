"""BlockRank against the official code (../shared/fixtures/blockrank-parity), against dense masked attention,
and its memory footprint."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rankline.formats import Candidates, Hit, Query
from rankline.kernels import BlockLayout
from rankline.rerankers.blockrank import (
    SEPARATOR,
    BlockRankOptions,
    BlockRankReranker,
    build_prompt,
    default_layer,
    format_document,
)
from rankline.rerankers.blockrank_attention import _document_chunks, score_prompts
from rankline.rerankers.models import load_causal_lm
from rankline.rerankers.ranking import order_hits


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _cases(fixtures_dir: Path, suffix: str) -> list[tuple[dict, dict, dict]]:
    root = fixtures_dir / "blockrank-parity"
    return list(zip(_jsonl(root / f"cases{suffix}.jsonl"), _jsonl(root / f"expected{suffix}.jsonl"),
                    _jsonl(root / f"blocks{suffix}.jsonl")))


def _candidates(case: dict) -> Candidates:
    hits = tuple(Hit(d["docid"], d["score"], d["text"], d.get("title") or "") for d in case["candidates"])
    return Candidates(Query(case["qid"], case["query"]), hits)


def _options(case: dict) -> BlockRankOptions:
    return BlockRankOptions(
        layer=case["layer"], max_block_tokens=case["max_block_tokens"], pad_to_multiple_of=case["pad_to_multiple_of"],
        query_offset=case["query_offset"], scoring_query_tokens=case["scoring_query_tokens"],
    )


@pytest.fixture(scope="module")
def tiny(fixtures_dir: Path):
    return load_causal_lm(str(fixtures_dir / "first-parity" / "tiny-llama"), device="cpu", dtype="float32")


def _check_blocks(tok, case: dict, blocks: dict) -> None:
    docs = [format_document(d.get("title"), d["text"]) for d in case["candidates"]]
    prompt = build_prompt(tok, case["query"], docs, _options(case))
    assert prompt.block_size == blocks["H"] and len(prompt.blocks) == blocks["M"]
    assert list(prompt.raw_lengths) == blocks["raw_block_lengths"]
    cut = [i for i, (raw, block) in enumerate(zip(prompt.raw_lengths, prompt.blocks)) if raw > len(block)]
    assert cut == blocks["truncated_blocks"]
    assert [list(b) for b in prompt.blocks] == blocks["block_token_ids"]
    assert list(prompt.blocks[-1][-case["scoring_query_tokens"]:]) == blocks["scoring_token_ids"]
    positions, start = prompt.position_ids(), 0
    for length, (first, last) in zip(prompt.lengths, blocks["position_ranges"]):
        assert positions[start:start + length] == list(range(first, last + 1))
        start += length


def _check_scores(reranker: BlockRankReranker, case: dict, expected: dict) -> None:
    candidates = _candidates(case)
    hits = candidates.hits
    scores = reranker.score_batch([candidates])[0]
    for hit, score in zip(hits, scores):
        want = expected["scores"][hit.docid]
        assert abs(score - want) <= expected["rtol"] * abs(want), (case["qid"], hit.docid, score, want)
    order = [h.docid for h in order_hits(hits, scores)]
    # Inside a tie group either order is right: compare orders with each group collapsed to one set.
    group_of = {d: i for i, group in enumerate(expected["tie_groups"]) for d in group}

    def collapse(ids: list[str]) -> list:
        out: list = []
        for d in ids:
            key = ("tie", group_of[d]) if d in group_of else d
            if not out or out[-1] != key or key == d:
                out.append(key)
        return out

    assert collapse(order) == collapse(expected["order"]), case["qid"]
    if not expected["tie_groups"]:
        assert order == expected["order"]


def test_blocks_equal_official_tokenisation(fixtures_dir, tiny):
    for case, _, blocks in _cases(fixtures_dir, ""):
        _check_blocks(tiny.tokenizer, case, blocks)


def test_scores_and_orders_equal_official_code(fixtures_dir, tiny):
    for case, expected, _ in _cases(fixtures_dir, ""):
        _check_scores(BlockRankReranker(tiny, _options(case)), case, expected)


@pytest.mark.slow
def test_smollm2_blocks_scores_and_orders_equal_official_code(fixtures_dir):
    lm = load_causal_lm("smollm2-135m-instruct", device="cpu", dtype=torch.float32)
    for case, expected, blocks in _cases(fixtures_dir, "-smollm2"):
        _check_blocks(lm.tokenizer, case, blocks)
        _check_scores(BlockRankReranker(lm, _options(case)), case, expected)


def test_batched_queries_equal_one_at_a_time(fixtures_dir, tiny):
    """Rows of different lengths and document counts in one forward pass give each row's own scores."""
    lists = [_candidates(c) for c, _, _ in _cases(fixtures_dir, "")][:3]
    together = BlockRankReranker(tiny, BlockRankOptions(layer=1, max_block_tokens=256, batch_size=3)).score_batch(lists)
    alone = BlockRankReranker(tiny, BlockRankOptions(layer=1, max_block_tokens=256))
    for candidates, row in zip(lists, together):
        assert row == pytest.approx(alone.score_batch([candidates])[0], rel=1e-5, abs=1e-8)


def _dense_reference(model, prompts) -> list[list[list[float]]]:
    """The whole prompts (padded at the end) through transformers' eager attention with an explicit
    [B, 1, T, T] BlockRank mask: for each layer, each prompt's scores read from that layer's attention
    probabilities as the official code reads them (the last two query tokens' mass on each document block)."""
    width = max(sum(p.lengths) for p in prompts)
    input_ids = torch.zeros(len(prompts), width, dtype=torch.long)
    position_ids = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, p in enumerate(prompts):
        input_ids[row, :sum(p.lengths)] = torch.tensor(p.input_ids())
        position_ids[row, :sum(p.lengths)] = torch.tensor(p.position_ids())
    layout = BlockLayout.from_lists([p.lengths[0] for p in prompts], [p.lengths[1:-1] for p in prompts],
                                    [p.lengths[-1] for p in prompts])
    allowed = layout.dense_mask(width) | torch.eye(width, dtype=torch.bool)  # padding rows attend to themselves only
    mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, torch.finfo(torch.float32).min)
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            out = model.base_model(input_ids=input_ids, position_ids=position_ids, attention_mask=mask[:, None],
                                   use_cache=False, output_attentions=True)
    finally:
        model.set_attn_implementation(previous)
    per_layer = []
    for probs in out.attentions:  # [B, H, T, T]
        scores = []
        for row, prompt in enumerate(prompts):
            lengths = prompt.lengths
            doc_lo, doc_hi = lengths[0], sum(lengths[:-1])
            last = sum(lengths)
            p = probs[row, :, last - 2:last, doc_lo:doc_hi]
            p = (p / p.sum(-1, keepdim=True)).mean(dim=(0, 1))
            bounds = [doc_lo + sum(lengths[1:i + 1]) for i in range(len(lengths) - 1)]
            scores.append([p[a - doc_lo:b - doc_lo].sum().item() for a, b in zip(bounds[:-1], bounds[1:])])
        per_layer.append(scores)
    return per_layer


def test_structured_attention_equals_dense_masked_attention(fixtures_dir, tiny):
    """The scoring path streams the documents: one pass for everything, one row per document, and rows of
    both prompts sharing passes must all give the dense scores, at every layer (the last one reads the
    states that every earlier layer's structured attention produced)."""
    model, tok = tiny.model, tiny.tokenizer
    implementation = model.config._attn_implementation
    cases = [c for c, _, _ in _cases(fixtures_dir, "")]
    options = BlockRankOptions(max_block_tokens=160)
    prompts = [build_prompt(tok, c["query"], [format_document(d.get("title"), d["text"]) for d in c["candidates"]],
                            options) for c in (cases[0], cases[2])]
    dense = _dense_reference(model, prompts)
    assert len(dense) == 2
    for layer, dense_scores in enumerate(dense):
        for chunk_tokens in (100_000, 1, 400):
            scores = score_prompts(model, prompts, layer=layer, scoring_tokens=2, chunk_tokens=chunk_tokens)
            for row in range(len(prompts)):
                assert scores[row] == pytest.approx(dense_scores[row], rel=1e-5, abs=1e-8), (layer, chunk_tokens)
    assert model.config._attn_implementation == implementation  # restored after each pass


def test_document_chunks_fill_passes_up_to_the_token_budget(tiny):
    tok = tiny.tokenizer
    long_prompt = build_prompt(tok, "q", ["one two three four five six " * 20] * 5, BlockRankOptions())
    short_prompt = build_prompt(tok, "q", ["one"], BlockRankOptions())
    n_instr, doc = long_prompt.lengths[0], long_prompt.lengths[1]
    assert (n_instr, doc, short_prompt.lengths[1]) == (191, 384, 31)
    budget = 2 * (n_instr + doc)  # rows of two documents (959 tokens); the last (575) and the short row (222) fit
    assert _document_chunks([long_prompt, short_prompt], budget) == [
        [(0, 0, 2)], [(0, 2, 4)], [(0, 4, 5), (1, 0, 1)]]  # the short rows share a pass
    assert _document_chunks([long_prompt], 1) == [[(0, i, i + 1)] for i in range(5)]  # at least one document


class _LargestTensor(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the largest number of elements of any tensor an operator produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_memory_grows_linearly_not_quadratically(tiny):
    """At N = 1,500 documents (T ~ 81k tokens) one [T, T] fp32 matrix would take 26 GB, the 4 heads' scores 105 GB.
    Every tensor of the scoring passes stays below T^2 / 100 elements (in fact 12.5M, the key cache, ~T^2 / 500), and
    doubling N at most doubles the largest one."""
    model, tok = tiny.model, tiny.tokenizer
    docs = [f"river {i} delta salmon harbor bank" for i in range(3000)]
    largest = {}
    for n in (1500, 3000):
        prompt = build_prompt(tok, "where does the river meet the sea", docs[:n], BlockRankOptions())
        T = sum(prompt.lengths)
        with _LargestTensor() as probe:
            scores = score_prompts(model, [prompt], layer=1, scoring_tokens=2, chunk_tokens=4096)[0]
        assert len(scores) == n and math.isclose(sum(scores), 1.0, rel_tol=1e-4)
        assert probe.largest < T * T / 100, (n, T, probe.largest)
        largest[n] = probe.largest
    assert largest[3000] <= 2.2 * largest[1500], largest


def test_calibration_subtracts_content_free_query(tiny):
    hits = tuple(Hit(f"d{i}", 0.0, text) for i, text in enumerate(["salmon river", "", "a much longer passage " * 5, "sea"]))
    plain = BlockRankReranker(tiny, BlockRankOptions(layer=1))
    neutral = plain.score_batch([Candidates(Query("n", "N/A"), hits)])[0]
    candidates = Candidates(Query("q", "where does the river meet the sea"), hits)
    raw = plain.score_batch([candidates])[0]
    calibrated = BlockRankReranker(tiny, BlockRankOptions(layer=1, calibrate=True)).score_batch([candidates])[0]
    assert calibrated == pytest.approx([r - c for r, c in zip(raw, neutral)], rel=1e-5, abs=1e-7)
    assert sum(calibrated) == pytest.approx(0.0, abs=1e-5)
    reranked = plain.rerank_batch([candidates])[0]  # the scores themselves, best first
    assert [(h.docid, h.score) for h in reranked] == [(hits[i].docid, raw[i]) for i in sorted(range(4), key=lambda i: -raw[i])]


def test_default_layer_scales_the_official_choice():
    assert default_layer(32) == 20 and default_layer(30) == 19 and default_layer(2) == 1 and default_layer(1) == 0


def test_separator_text_inside_a_document_stays_in_its_block(tiny):
    tok = tiny.tokenizer
    docs = [f"before {SEPARATOR} after", "plain"]
    prompt = build_prompt(tok, "q", docs, BlockRankOptions())
    assert len(prompt.blocks) == 4  # instruction, two documents, query
    assert tok.decode(prompt.blocks[1]) == f"\nID: 0 | CONTENT: before {SEPARATOR} after | END ID: 0"


def test_errors_name_the_problem(tiny):
    with pytest.raises(ValueError, match="query block has .* tokens but blocks are cut"):
        build_prompt(tiny.tokenizer, "a rather long query " * 10, ["doc"], BlockRankOptions(max_block_tokens=32))
    with pytest.raises(ValueError, match="layer 5 does not exist"):
        BlockRankReranker(tiny, BlockRankOptions(layer=5))
    with pytest.raises(ValueError, match="max_block_tokens must be >= 1"):
        BlockRankOptions(max_block_tokens=0)
    with pytest.raises(ValueError, match="chunk_tokens must be >= 1"):
        BlockRankOptions(chunk_tokens=0)
    with pytest.raises(RuntimeError, match="layer 5 was never reached"):
        score_prompts(tiny.model, [build_prompt(tiny.tokenizer, "q", ["doc"], BlockRankOptions())], layer=5,
                      scoring_tokens=2, chunk_tokens=4096)
    too_many = BlockRankReranker(tiny, BlockRankOptions(layer=1, scoring_query_tokens=10_000))
    with pytest.raises(ValueError, match="the query block has fewer than scoring_query_tokens=10000 tokens"):
        too_many.score_batch([Candidates(Query("q", "salmon"), (Hit("d", 0.0, "river"),))])


def test_rerank_command_writes_the_official_scores(fixtures_dir, tmp_path):
    """`rankline rerank --reranker blockrank` on rank_llm-style candidates reproduces the fixture scores."""
    from rankline.formats import read_run
    from rankline.pipelines.cli import main

    cases = _cases(fixtures_dir, "")
    case, expected, _ = cases[1]  # s02: 10 documents, layer 1, max_block_tokens 200 (blocks cut)
    requests = [{"query": case["query"], "hits": [
        {"qid": case["qid"], "docid": d["docid"], "rank": r, "score": d["score"],
         "content": f"{d.get('title') or ''} {d['text']}"} for r, d in enumerate(case["candidates"], 1)]}]
    candidates = tmp_path / "candidates.json"
    candidates.write_text(json.dumps(requests), encoding="utf-8")
    out = tmp_path / "run.trec"
    code = main(["rerank", "--candidates", str(candidates), "--reranker", "blockrank",
                 "--model", str(fixtures_dir / "first-parity" / "tiny-llama"), "--layer", str(case["layer"]),
                 "--max-block-tokens", str(case["max_block_tokens"]), "--out", str(out)])
    assert code == 0
    run = read_run(out)[case["qid"]]
    for docid, want in expected["scores"].items():
        assert abs(run[docid] - want) <= expected["rtol"] * abs(want)
    assert sorted(run, key=run.get, reverse=True) == expected["order"]
