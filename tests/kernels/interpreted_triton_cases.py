"""Triton paths against the naive references under TRITON_INTERPRET=1 on CPU tensors (run by test_triton.py).

Output buffers are poisoned with NaN before every run, so an element a kernel forgets to write fails the test.
"""
from __future__ import annotations

import os

import pytest
import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/kernels/test_triton.py"

from rankline.kernels import BlockLayout, block_attention, lightning_attention  # noqa: E402
from rankline.kernels.block_attention import triton as block_attention_triton  # noqa: E402
from rankline.kernels.lightning_attention import triton as lightning_attention_triton  # noqa: E402

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


@pytest.fixture(autouse=True)
def nan_poisoned_outputs(monkeypatch):
    def poisoned(shape, like):
        return torch.full(shape, float("nan"), dtype=like.dtype if like.dtype != torch.float64 else torch.float32)

    monkeypatch.setattr(lightning_attention_triton, "_output", lambda shape, like: poisoned(shape, torch.empty(0)))
    monkeypatch.setattr(block_attention_triton, "_output", poisoned)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("t", "dk", "dv", "with_state"), [(63, 60, 100, True), (40, 100, 60, False), (5, 16, 16, True)])
def test_lightning_triton_forward_and_backward(dtype, t, dk, dv, with_state, assert_close) -> None:
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 2, t, dk, generator=gen) / dk**0.5 for _ in range(2))
    v = torch.randn(1, 2, t, dv, generator=gen)
    s0 = torch.randn(1, 2, dk, dv, generator=gen)
    ref = [x.double().requires_grad_() for x in (q, k, v, s0)]
    ours = [x.to(dtype).requires_grad_() for x in (q, k, v)] + [s0.clone().requires_grad_()]
    g = [-0.05, -0.9]

    def run(x, backend):
        return lightning_attention(
            x[0], x[1], x[2], g, scale=0.5, initial_state=x[3] if with_state else None,
            output_final_state=True, chunk_size=16, backend=backend,
        )

    o_ref, s_ref = run(ref, "naive")
    o, s = run(ours, "triton")
    wanted = slice(0, 4 if with_state else 3)
    grads_ref = torch.autograd.grad(o_ref.sum() + s_ref.sum(), ref[wanted])
    grads = torch.autograd.grad(o.float().sum() + s.sum(), ours[wanted])
    tol = TOLERANCE[dtype]
    assert_close("o", o, o_ref, tol)
    assert_close("final state", s, s_ref, tol)
    for name, a, e in zip(("dq", "dk", "dv", "dh0"), grads, grads_ref):
        assert_close(name, a, e, tol)


LAYOUTS = {
    "ragged": BlockLayout.from_lists([5, 3], [[4, 0, 7], [30, 2]], [3, 24]),
    "one-row-63": BlockLayout.from_lists([11], [[13, 1, 20, 9]], [9]),
    "empty-row": BlockLayout.from_lists([4, 0], [[5, 6], []], [3, 0]),
    "long-docs": BlockLayout.from_lists([20], [[70, 3, 90]], [17]),
}


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("hq", "hkv", "d"), [(4, 2, 60), (1, 1, 100)])
def test_block_attention_triton_forward(name, dtype, hq, hkv, d, assert_close) -> None:
    layout = LAYOUTS[name]
    gen = torch.Generator().manual_seed(1)
    t = layout.seq_len + 3
    q, k, v = (torch.randn(layout.batch_size, h, t, d, generator=gen).to(dtype) for h in (hq, hkv, hkv))
    expected = block_attention(q.double(), k.double(), v.double(), layout, backend="naive")
    with torch.no_grad():
        actual = block_attention(q, k, v, layout, backend="triton")
    assert actual.dtype == dtype
    assert_close("o", actual, expected, TOLERANCE[dtype])
    padding = ~layout.dense_mask(t).any(-1)
    assert torch.count_nonzero(actual.transpose(1, 2)[padding]) == 0


def test_block_attention_triton_refuses_gradients() -> None:
    layout = LAYOUTS["ragged"]
    q = torch.randn(2, 2, layout.seq_len, 16, requires_grad=True)
    with pytest.raises(ValueError, match="forward-only"):
        block_attention(q, q, q, layout, backend="triton")
