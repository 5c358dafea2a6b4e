"""BlockRank against the official code (../shared/fixtures/blockrank-parity), against dense masked attention,
and its memory footprint."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rankline.rerankers.blockrank import (  # noqa: E402
    SEPARATOR,
    BlockRankConfig,
    BlockRankReranker,
    build_prompt,
    default_layer,
    format_document,
    order_hits,
)
from rankline.rerankers.blockrank_attention import forward_blocks, pack_prompts, score_prompts  # noqa: E402
from rankline.formats import Hit, Query  # noqa: E402


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _cases(fixtures_dir: Path, suffix: str) -> list[tuple[dict, dict, dict]]:
    root = fixtures_dir / "blockrank-parity"
    return list(zip(_jsonl(root / f"cases{suffix}.jsonl"), _jsonl(root / f"expected{suffix}.jsonl"),
                    _jsonl(root / f"blocks{suffix}.jsonl")))


def _hits(case: dict) -> list[Hit]:
    return [Hit(d["docid"], d["score"], d["text"], d.get("title") or "") for d in case["candidates"]]


def _config(case: dict) -> BlockRankConfig:
    return BlockRankConfig(
        layer=case["layer"], max_block_tokens=case["max_block_tokens"], pad_to_multiple_of=case["pad_to_multiple_of"],
        query_offset=case["query_offset"], scoring_query_tokens=case["scoring_query_tokens"],
    )


@pytest.fixture(scope="module")
def tiny(fixtures_dir: Path):
    folder = fixtures_dir / "first-parity" / "tiny-llama"
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, tok


def _check_blocks(tok, case: dict, blocks: dict) -> None:
    docs = [format_document(d.get("title"), d["text"]) for d in case["candidates"]]
    prompt = build_prompt(tok, case["query"], docs, _config(case))
    assert prompt.block_size == blocks["H"] and len(prompt.blocks) == blocks["M"]
    assert list(prompt.raw_lengths) == blocks["raw_block_lengths"]
    assert list(prompt.truncated) == blocks["truncated_blocks"]
    assert [list(b) for b in prompt.blocks] == blocks["block_token_ids"]
    assert list(prompt.blocks[-1][-case["scoring_query_tokens"]:]) == blocks["scoring_token_ids"]
    positions, start = prompt.position_ids(), 0
    for length, (first, last) in zip(prompt.lengths, blocks["position_ranges"]):
        assert positions[start:start + length] == list(range(first, last + 1))
        start += length


def _check_scores(reranker: BlockRankReranker, case: dict, expected: dict) -> None:
    hits = _hits(case)
    scores = reranker.score_batch([Query(case["qid"], case["query"])], [hits])[0]
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
        _check_blocks(tiny[1], case, blocks)


def test_scores_and_orders_equal_official_code(fixtures_dir, tiny):
    model, tok = tiny
    for case, expected, _ in _cases(fixtures_dir, ""):
        _check_scores(BlockRankReranker(model, tok, _config(case)), case, expected)


@pytest.mark.slow
def test_smollm2_blocks_scores_and_orders_equal_official_code(fixtures_dir):
    from rankline.rerankers.models import load_causal_lm

    lm = load_causal_lm("smollm2-135m-instruct", device="cpu", dtype=torch.float32)
    for case, expected, blocks in _cases(fixtures_dir, "-smollm2"):
        _check_blocks(lm.tokenizer, case, blocks)
        _check_scores(BlockRankReranker(lm.model, lm.tokenizer, _config(case)), case, expected)


def test_batched_queries_equal_one_at_a_time(fixtures_dir, tiny):
    """Rows of different lengths and document counts in one forward pass give each row's own scores."""
    model, tok = tiny
    cases = [c for c, _, _ in _cases(fixtures_dir, "")][:3]
    config = BlockRankConfig(layer=1, max_block_tokens=256, batch_size=3)
    queries, hits = [Query(c["qid"], c["query"]) for c in cases], [_hits(c) for c in cases]
    together = BlockRankReranker(model, tok, config).score_batch(queries, hits)
    alone = BlockRankReranker(model, tok, BlockRankConfig(layer=1, max_block_tokens=256))
    for query, row_hits, row in zip(queries, hits, together):
        assert row == pytest.approx(alone.score_batch([query], [row_hits])[0], rel=1e-5, abs=1e-8)


def _dense_reference(model, prompts, layer: int):
    """The same rows through transformers' eager attention with an explicit [B, 1, T, T] BlockRank mask:
    the last hidden states and the scores read from that layer's attention probabilities."""
    input_ids, position_ids, layout = pack_prompts(prompts)
    T = input_ids.shape[1]
    allowed = layout.dense_mask(T) | torch.eye(T, dtype=torch.bool)  # padding rows attend to themselves only
    mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, torch.finfo(torch.float32).min)
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            out = model.base_model(input_ids=input_ids, position_ids=position_ids, attention_mask=mask[:, None],
                                   use_cache=False, output_attentions=True)
    finally:
        model.set_attn_implementation(previous)
    probs = out.attentions[layer]  # [B, H, T, T]
    scores = []
    for row, prompt in enumerate(prompts):
        lengths = prompt.lengths
        doc_lo, doc_hi = lengths[0], sum(lengths[:-1])
        last = sum(lengths)
        p = probs[row, :, last - 2:last, doc_lo:doc_hi]
        p = (p / p.sum(-1, keepdim=True)).mean(dim=(0, 1))
        bounds = [doc_lo + sum(lengths[1:i + 1]) for i in range(len(lengths) - 1)]
        scores.append([p[a - doc_lo:b - doc_lo].sum().item() for a, b in zip(bounds[:-1], bounds[1:])])
    return out.last_hidden_state, scores


def test_structured_attention_equals_dense_masked_attention(fixtures_dir, tiny):
    model, tok = tiny
    implementation = model.config._attn_implementation
    cases = [c for c, _, _ in _cases(fixtures_dir, "")]
    config = BlockRankConfig(layer=1, max_block_tokens=160)
    prompts = [build_prompt(tok, c["query"], [format_document(d.get("title"), d["text"]) for d in c["candidates"]],
                            config) for c in (cases[0], cases[2])]
    dense_hidden, dense_scores = _dense_reference(model, prompts, layer=1)
    hidden = forward_blocks(model, prompts)
    for row, prompt in enumerate(prompts):
        n = sum(prompt.lengths)
        torch.testing.assert_close(hidden[row, :n], dense_hidden[row, :n], rtol=1e-4, atol=1e-5)
    # The scoring path streams the documents: one pass for everything, one row per document, and rows of
    # both prompts sharing passes must all give the dense scores.
    for chunk_tokens in (100_000, 1, 400):
        scores = score_prompts(model, prompts, layer=1, scoring_tokens=2, chunk_tokens=chunk_tokens)
        for row, prompt in enumerate(prompts):
            assert scores[row] == pytest.approx(dense_scores[row], rel=1e-5, abs=1e-8), chunk_tokens
    assert model.config._attn_implementation == implementation  # restored after each pass


def test_document_chunks_fill_passes_up_to_the_token_budget(tiny):
    from rankline.rerankers.blockrank_attention import _document_chunks

    _, tok = tiny
    config = BlockRankConfig()
    long_prompt = build_prompt(tok, "q", ["one two three four five six " * 20] * 5, config)
    short_prompt = build_prompt(tok, "q", ["one"], config)
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
    model, tok = tiny
    config = BlockRankConfig(layer=1)
    docs = [f"river {i} delta salmon harbor bank" for i in range(3000)]
    largest = {}
    for n in (1500, 3000):
        prompt = build_prompt(tok, "where does the river meet the sea", docs[:n], config)
        T = sum(prompt.lengths)
        with _LargestTensor() as probe:
            scores = score_prompts(model, [prompt], layer=1, scoring_tokens=2, chunk_tokens=4096)[0]
        assert len(scores) == n and math.isclose(sum(scores), 1.0, rel_tol=1e-4)
        assert probe.largest < T * T / 100, (n, T, probe.largest)
        largest[n] = probe.largest
    assert largest[3000] <= 2.2 * largest[1500], largest


def test_calibration_subtracts_content_free_query(tiny):
    model, tok = tiny
    hits = [Hit(f"d{i}", 0.0, text) for i, text in enumerate(["salmon river", "", "a much longer passage " * 5, "sea"])]
    query = Query("q", "where does the river meet the sea")
    plain = BlockRankReranker(model, tok, BlockRankConfig(layer=1))
    neutral = plain.score_batch([Query("n", "N/A")], [hits])[0]
    raw = plain.score_batch([query], [hits])[0]
    calibrated = BlockRankReranker(model, tok, BlockRankConfig(layer=1, calibrate=True)).score_batch([query], [hits])[0]
    assert calibrated == pytest.approx([r - c for r, c in zip(raw, neutral)], rel=1e-5, abs=1e-7)
    assert sum(calibrated) == pytest.approx(0.0, abs=1e-5)


def test_order_hits_is_stable_and_strictly_decreasing():
    hits = [Hit(d, 0.0) for d in "abcd"]
    ranked = order_hits(hits, [0.25, 0.5, 0.25, 0.0])
    assert [h.docid for h in ranked] == ["b", "a", "c", "d"]
    assert ranked[1].score == 0.25 and ranked[2].score < 0.25 and ranked[2].score == math.nextafter(0.25, 0.0)
    assert all(x.score > y.score for x, y in zip(ranked, ranked[1:]))


def test_default_layer_scales_the_official_choice():
    assert default_layer(32) == 20 and default_layer(30) == 19 and default_layer(2) == 1 and default_layer(1) == 0


def test_separator_text_inside_a_document_stays_in_its_block(tiny):
    _, tok = tiny
    docs = [f"before {SEPARATOR} after", "plain"]
    prompt = build_prompt(tok, "q", docs, BlockRankConfig())
    assert prompt.num_docs == 2
    assert tok.decode(prompt.blocks[1]) == f"\nID: 0 | CONTENT: before {SEPARATOR} after | END ID: 0"


def test_errors_name_the_problem(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="query block has .* tokens but blocks are cut"):
        build_prompt(tok, "a rather long query " * 10, ["doc"], BlockRankConfig(max_block_tokens=32))
    with pytest.raises(ValueError, match="layer 5 does not exist"):
        BlockRankReranker(model, tok, BlockRankConfig(layer=5))
    with pytest.raises(ValueError, match="max_block_tokens must be >= 1"):
        BlockRankConfig(max_block_tokens=0)
    with pytest.raises(ValueError, match="chunk_tokens must be >= 1"):
        BlockRankConfig(chunk_tokens=0)
    too_many = BlockRankReranker(model, tok, BlockRankConfig(layer=1, scoring_query_tokens=10_000))
    with pytest.raises(ValueError, match="the query block has fewer than scoring_query_tokens=10000 tokens"):
        too_many.score_batch([Query("q", "salmon")], [[Hit("d", 0.0, "river")]])


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
