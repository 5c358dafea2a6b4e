"""block_attention and block_attention_scores: torch path against the dense-mask reference, hand-built cases."""
from __future__ import annotations

import math

import pytest
import torch

from rankline.kernels import BlockLayout, block_attention, block_attention_scores, document_attention_scores

# fp32 and bf16 relative-RMS tolerances against the float64 reference
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def _inputs(layout: BlockLayout, hq: int, hkv: int, d: int, dtype: torch.dtype, extra: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    t = layout.seq_len + extra
    return [torch.randn(layout.batch_size, h, t, d, generator=gen).to(dtype) for h in (hq, hkv, hkv)]


def test_dense_mask_matches_hand_built_matrix() -> None:
    layout = BlockLayout.from_lists([2], [[2, 1]], [2])  # 0-1 instruction, 2-3 doc 0, 4 doc 1, 5-6 query, 7 pad
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 1, 0, 0, 0],
            [1, 1, 1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 1, 1, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(layout.dense_mask(8)[0], expected)


def test_naive_matches_explicit_softmax_on_one_row() -> None:
    layout = BlockLayout.from_lists([2], [[2, 1]], [2])
    q, k, v = _inputs(layout, 1, 1, 4, torch.float64, extra=1)
    out = block_attention(q, k, v, layout, backend="naive")
    allowed = {4: [0, 1, 4], 6: [0, 1, 2, 3, 4, 5, 6]}  # doc 1's token, and the last query token
    for i, keys in allowed.items():
        logits = torch.stack([q[0, 0, i] @ k[0, 0, j] / 2.0 for j in keys])
        expected = torch.softmax(logits, 0) @ v[0, 0, keys]
        torch.testing.assert_close(out[0, 0, i], expected)
    assert torch.equal(out[0, 0, 7], torch.zeros(4, dtype=torch.float64))


LAYOUTS = {
    "ragged": BlockLayout.from_lists([5, 3], [[4, 0, 7], [6, 2]], [3, 4]),
    "one-row-63": BlockLayout.from_lists([11], [[13, 1, 20, 9]], [9]),  # 63 tokens
    "no-instruction": BlockLayout.from_lists([0, 4], [[3, 3], [5]], [2, 0]),
    "empty-row": BlockLayout.from_lists([4, 0], [[5, 6], []], [3, 0]),
}


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("hq", "hkv", "d"), [(4, 2, 60), (3, 3, 100)])
def test_torch_path_output_and_gradients(name, dtype, hq, hkv, d, assert_close) -> None:
    layout = LAYOUTS[name]
    ref_inputs = [x.double().requires_grad_() for x in _inputs(layout, hq, hkv, d, dtype)]
    inputs = [x.detach().to(dtype).requires_grad_() for x in ref_inputs]
    expected = block_attention(*ref_inputs, layout, backend="naive")
    actual = block_attention(*inputs, layout, backend="torch")
    assert actual.dtype == dtype
    grad_out = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, ref_inputs, grad_out)
    actual_grads = torch.autograd.grad(actual, inputs, grad_out.to(dtype))
    tol = TOLERANCE[dtype]
    assert_close("o", actual, expected, tol)
    for label, a, e in zip(("dq", "dk", "dv"), actual_grads, expected_grads):
        assert_close(label, a, e, tol)
    padding = ~layout.dense_mask(actual.shape[2]).any(-1)  # [B, T]: rows that attend nowhere
    assert torch.count_nonzero(actual.detach().transpose(1, 2)[padding]) == 0


def test_ragged_500_token_row_gqa(assert_close) -> None:
    layout = BlockLayout.from_lists([37, 20], [[128, 90, 1, 64, 120], [200, 17, 150]], [60, 40])  # 500 tokens
    q, k, v = _inputs(layout, 6, 2, 64, torch.float64)
    expected = block_attention(q, k, v, layout, backend="naive")
    assert_close("o", block_attention(q, k, v, layout, backend="torch"), expected, 1e-12)


def test_documents_in_many_length_sorted_calls_and_the_plan_is_reused(assert_close, monkeypatch) -> None:
    from rankline.kernels.block_attention import blockwise

    layout = BlockLayout.from_lists([37, 20], [[128, 90, 1, 64, 120], [200, 17, 150]], [60, 40])
    q, k, v = _inputs(layout, 6, 2, 64, torch.float64)
    expected = block_attention(q, k, v, layout, backend="naive")
    blockwise._plan.cache_clear()
    monkeypatch.setattr(blockwise, "_DOC_CHUNK_ELEMENTS", 6 * 130 * (37 + 130))  # ~1-2 documents per call
    try:
        calls = blockwise._plan(layout, 6, q.device)
        doc_calls = [c for c in calls if c.key_pos is not None]
        assert len(doc_calls) >= 4 and [c.pos.shape[1] for c in doc_calls] == sorted(
            (c.pos.shape[1] for c in doc_calls), reverse=True)  # longest first, each padded to its own longest
        assert_close("o", block_attention(q, k, v, layout, backend="torch"), expected, 1e-12)
        assert blockwise._plan.cache_info().hits == 1  # every layer of a forward pass reuses the plan
    finally:
        blockwise._plan.cache_clear()


def test_auto_uses_torch_path_on_cpu(assert_close) -> None:
    layout = LAYOUTS["ragged"]
    q, k, v = _inputs(layout, 2, 1, 8, torch.float32)
    assert_close("o", block_attention(q, k, v, layout), block_attention(q, k, v, layout, backend="torch"), 0.0)


def test_shape_and_layout_errors() -> None:
    layout = LAYOUTS["ragged"]
    q, k, v = _inputs(layout, 4, 2, 8, torch.float32)
    with pytest.raises(ValueError, match="multiple"):
        block_attention(q, k[:, :1].expand(-1, 3, -1, -1), v[:, :1].expand(-1, 3, -1, -1), layout)
    with pytest.raises(ValueError, match="tokens"):
        block_attention(q[:, :, :10], k[:, :, :10], v[:, :, :10], layout)
    with pytest.raises(ValueError, match="rows"):
        block_attention(q[:1], k[:1], v[:1], layout)
    with pytest.raises(ValueError, match="backend"):
        block_attention(q, k, v, layout, backend="cuda")
    with pytest.raises(ValueError, match=">= 0"):
        BlockLayout.from_lists([1], [[-2]], [1])


def test_scores_uniform_attention_is_proportional_to_length() -> None:
    layout = BlockLayout.from_lists([3], [[2, 1, 0, 5]], [2])
    q = torch.zeros(1, 2, layout.seq_len, 8)  # all logits equal: mass = length / total document tokens
    k = torch.randn(1, 1, layout.seq_len, 8)
    q0 = layout.query_starts()[0]
    scores = block_attention_scores(q, k, layout, query_index=[[q0, q0 + 1]])
    torch.testing.assert_close(scores, torch.tensor([[2 / 8, 1 / 8, 0.0, 5 / 8]]))


def test_scores_hand_computed_two_tokens_two_heads() -> None:
    # 1 instruction token, docs of 1 and 2 tokens, 2 query tokens; D = 1 so logits are products.
    layout = BlockLayout.from_lists([1], [[1, 2]], [2])
    k = torch.tensor([9.0, 1.0, 0.0, 2.0, 7.0, 5.0]).view(1, 1, 6, 1)
    q = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 0.0, 0.0, -1.0, 0.5]]).view(1, 2, 6, 1)
    scale = 0.5
    expected = torch.zeros(2)
    for head in range(2):
        for t in (4, 5):
            z = torch.tensor([q[0, head, t, 0] * k[0, 0, j, 0] * scale for j in (1, 2, 3)])
            p = torch.softmax(z, 0)
            expected += torch.stack([p[0], p[1] + p[2]]) / 4
    scores = block_attention_scores(q, k, layout, query_index=[[4, 5]], scale=scale)
    torch.testing.assert_close(scores[0], expected)


@pytest.mark.parametrize("name", ["ragged", "one-row-63", "empty-row"])
def test_scores_torch_matches_naive(name) -> None:
    layout = LAYOUTS[name]
    q, k, _ = _inputs(layout, 6, 2, 16, torch.float32, seed=3)
    index = [[q0 + max(n - 1, 0), q0] for q0, n in zip(layout.query_starts(), layout.query)]
    if any(n == 0 for n in layout.query):
        with pytest.raises(ValueError, match="outside"):
            block_attention_scores(q, k, layout, query_index=index)
        return
    naive = block_attention_scores(q, k, layout, query_index=index, backend="naive")
    fast = block_attention_scores(q, k, layout, query_index=index, backend="torch")
    torch.testing.assert_close(fast, naive, rtol=1e-5, atol=1e-7)
    assert naive.shape == (layout.batch_size, layout.num_docs)
    for row, lengths in enumerate(layout.docs):
        total = math.fsum(float(s) for s in naive[row])
        assert total == pytest.approx(1.0 if sum(lengths) else 0.0, abs=1e-6)


def test_scores_keep_fp64_for_fp64_inputs() -> None:
    """Gradient checks of losses on the scores need fp64 end to end: the torch path must not round to fp32."""
    layout = LAYOUTS["ragged"]
    q, k, _ = _inputs(layout, 6, 2, 16, torch.float64, seed=7)
    q.requires_grad_(True)
    index = [[q0 + n - 1, q0] for q0, n in zip(layout.query_starts(), layout.query)]
    naive = block_attention_scores(q, k, layout, query_index=index, backend="naive")
    fast = block_attention_scores(q, k, layout, query_index=index, backend="torch")
    assert naive.dtype == fast.dtype == torch.float64
    torch.testing.assert_close(fast, naive, rtol=1e-12, atol=1e-14)
    torch.autograd.gradcheck(
        lambda q_: block_attention_scores(q_, k, layout, query_index=index, backend="torch"), (q,), eps=1e-6, atol=1e-8)


def test_document_scores_from_document_keys_alone_match_whole_rows() -> None:
    """The scores from the picked queries and the documents' keys (as a key cache holds them) equal the
    naive whole-row scores; each row's documents are taken out of the row and laid back to back."""
    layout = LAYOUTS["ragged"]
    q, k, _ = _inputs(layout, 6, 2, 16, torch.float32, seed=5)
    index = [[q0 + n - 1, q0] for q0, n in zip(layout.query_starts(), layout.query)]
    expected = block_attention_scores(q, k, layout, query_index=index, backend="naive")
    picked = torch.stack([q[b, :, index[b]] for b in range(layout.batch_size)])
    width = max(sum(d) for d in layout.docs)
    docs = torch.zeros(layout.batch_size, k.shape[1], width, k.shape[3])
    for b, (n_instr, lengths) in enumerate(zip(layout.instruction, layout.docs)):
        docs[b, :, : sum(lengths)] = k[b, :, n_instr : n_instr + sum(lengths)]
    got = document_attention_scores(picked, docs, layout.docs)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="do not match"):
        document_attention_scores(picked, docs[:, :, :, :8], layout.docs)


def test_layout_rows_must_agree() -> None:
    with pytest.raises(ValueError, match="one entry per row"):
        BlockLayout.from_lists([1, 2], [[3]], [1, 1])
    layout = BlockLayout.from_lists([2, 0], [[3, 0, 1], []], [2, 1])
    assert (layout.batch_size, layout.num_docs, layout.seq_len) == (2, 3, 8)
    assert layout.row_lengths == (8, 1) and layout.query_starts() == (6, 0)


def test_importing_the_package_loads_neither_torch_nor_triton() -> None:
    import subprocess
    import sys

    code = "import sys, rankline.kernels; assert not {'torch', 'triton'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
